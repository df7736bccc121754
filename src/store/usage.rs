//! Usage per token, as stored: requests allowed and refused per hour, the
//! last few distinct clients, the last refusal. [`UsageStore`] is the
//! contract both backends keep (`tests/usage_store.rs` runs one suite on
//! both); the types and the hour arithmetic are plain data.
//!
//! Written only by the background usage writer (never on the request
//! path), read by the admin API. A store never learns what a count means.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::token::TokenId;

/// Distinct clients kept per token (the most recently seen).
pub const MAX_CLIENTS: usize = 10;
/// Longest user agent kept, in bytes (longer ones are cut).
pub const MAX_USER_AGENT: usize = 256;
/// The window of `requests_7d` in a token list: today (UTC) and the six
/// days before.
pub const RECENT_DAYS: u32 = 7;

const HOUR_SECS: i64 = 3600;
const DAY_HOURS: u32 = 24;

/// Requests allowed and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub allowed: u64,
    pub refused: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.allowed = self.allowed.saturating_add(other.allowed);
        self.refused = self.refused.saturating_add(other.refused);
    }

    pub fn is_zero(&self) -> bool {
        self.allowed == 0 && self.refused == 0
    }

    pub fn total(&self) -> u64 {
        self.allowed.saturating_add(self.refused)
    }
}

/// A client of a token: its address and user agent, first and last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSeen {
    pub address: String,
    /// Empty when the request had none.
    pub user_agent: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// The last refusal of a token: its deny code and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRefusal {
    pub code: String,
    pub at: Timestamp,
}

/// What one flush adds for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    pub token_id: TokenId,
    /// The hour the counts belong to ([`hour_of`]).
    pub hour: u32,
    pub counts: Counts,
    pub clients: Vec<ClientSeen>,
    pub last_refusal: Option<LastRefusal>,
}

/// A token's usage over a range of hours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// The hours with any request, oldest first.
    pub hours: Vec<(u32, Counts)>,
    /// Most recently seen first, at most [`MAX_CLIENTS`].
    pub clients: Vec<ClientSeen>,
    pub last_refusal: Option<LastRefusal>,
}

/// Where usage is kept: beside the tokens, in the same backend.
pub trait UsageStore: Send + Sync + 'static {
    /// The most deltas one [`UsageStore::add_usage`] call should carry; the
    /// writer splits a larger flush into calls of at most this many.
    fn deltas_per_call(&self) -> usize {
        usize::MAX
    }

    /// Adds one flush: counts to their hour (and day), clients and the last
    /// refusal merged into what is kept. What is older than `retention`
    /// is dropped (a Redis TTL; pruned in the embedded file).
    fn add_usage(
        &self,
        batch: &[UsageDelta],
        retention: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Token `id`'s hours `first..=last`, its clients and last refusal.
    fn usage(
        &self,
        id: &TokenId,
        first: u32,
        last: u32,
    ) -> impl Future<Output = Result<UsageReport, StoreError>> + Send;

    /// For each of `ids`, the requests of days `first_day..=last_day`
    /// (days since the epoch, UTC); one read for the whole list.
    fn daily_totals(
        &self,
        ids: &[TokenId],
        first_day: u32,
        last_day: u32,
    ) -> impl Future<Output = Result<Vec<Counts>, StoreError>> + Send;
}

/// The hour of `t`: whole hours since the Unix epoch, UTC.
pub fn hour_of(t: Timestamp) -> u32 {
    u32::try_from(t.as_second().div_euclid(HOUR_SECS)).unwrap_or(0)
}

/// The day of an hour: whole days since the Unix epoch, UTC.
pub fn day_of_hour(hour: u32) -> u32 {
    hour / DAY_HOURS
}

/// The first instant of `hour`.
pub fn hour_start(hour: u32) -> Timestamp {
    Timestamp::from_second(i64::from(hour) * HOUR_SECS).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `2027010113` for 13:00 UTC on 1 January 2027 (a Redis key's end).
pub fn hour_label(hour: u32) -> String {
    hour_start(hour).strftime("%Y%m%d%H").to_string()
}

/// `20270101` for 1 January 2027.
pub fn day_label(day: u32) -> String {
    hour_start(day * DAY_HOURS).strftime("%Y%m%d").to_string()
}

/// Milliseconds since the epoch at which data of `hour` (or of a day's
/// last hour) may go: the end of that hour plus `retention`.
pub fn expires_ms(last_hour: u32, retention: Duration) -> i64 {
    let end = (i64::from(last_hour) + 1) * HOUR_SECS * 1000;
    end.saturating_add(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
}

/// Merges `seen` into `clients` (one entry per address and user agent:
/// first seen the earliest, last seen the latest), keeping the
/// [`MAX_CLIENTS`] most recently seen, newest first.
pub fn merge_client(clients: &mut Vec<ClientSeen>, seen: &ClientSeen) {
    match clients
        .iter_mut()
        .find(|c| c.address == seen.address && c.user_agent == seen.user_agent)
    {
        Some(c) => {
            c.first_seen = c.first_seen.min(seen.first_seen);
            c.last_seen = c.last_seen.max(seen.last_seen);
        }
        None => clients.push(seen.clone()),
    }
    clients.sort_by_key(|c| std::cmp::Reverse(c.last_seen));
    clients.truncate(MAX_CLIENTS);
}

/// The later of two refusals.
pub fn later_refusal(a: Option<LastRefusal>, b: Option<&LastRefusal>) -> Option<LastRefusal> {
    match (a, b) {
        (Some(a), Some(b)) if b.at > a.at => Some(b.clone()),
        (Some(a), _) => Some(a),
        (None, b) => b.cloned(),
    }
}

impl UsageStore for Store {
    fn deltas_per_call(&self) -> usize {
        match self {
            Store::Embedded(s) => s.deltas_per_call(),
            Store::Redis(s) => s.deltas_per_call(),
        }
    }

    async fn add_usage(&self, batch: &[UsageDelta], retention: Duration) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.add_usage(batch, retention).await,
            Store::Redis(s) => s.add_usage(batch, retention).await,
        }
    }

    async fn usage(&self, id: &TokenId, first: u32, last: u32) -> Result<UsageReport, StoreError> {
        match self {
            Store::Embedded(s) => s.usage(id, first, last).await,
            Store::Redis(s) => s.usage(id, first, last).await,
        }
    }

    async fn daily_totals(
        &self,
        ids: &[TokenId],
        first_day: u32,
        last_day: u32,
    ) -> Result<Vec<Counts>, StoreError> {
        match self {
            Store::Embedded(s) => s.daily_totals(ids, first_day, last_day).await,
            Store::Redis(s) => s.daily_totals(ids, first_day, last_day).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn hours_and_days_are_utc_and_labelled_for_keys() {
        let h = hour_of(at("2027-01-01T13:59:59Z"));
        assert_eq!(hour_label(h), "2027010113");
        assert_eq!(hour_start(h), at("2027-01-01T13:00:00Z"));
        assert_eq!(day_label(day_of_hour(h)), "20270101");
        assert_eq!(hour_of(at("2027-01-01T14:00:00Z")), h + 1);
    }

    #[test]
    fn retention_counts_from_the_end_of_the_hour() {
        let h = hour_of(at("2027-01-01T13:20:00Z"));
        assert_eq!(
            expires_ms(h, Duration::from_secs(60)),
            at("2027-01-01T14:01:00Z").as_millisecond()
        );
    }

    #[test]
    fn clients_merge_by_address_and_agent_and_keep_the_ten_latest() {
        let seen = |addr: &str, first: i64, last: i64| ClientSeen {
            address: addr.into(),
            user_agent: "curl/8".into(),
            first_seen: Timestamp::from_second(first).unwrap(),
            last_seen: Timestamp::from_second(last).unwrap(),
        };
        let mut list = Vec::new();
        merge_client(&mut list, &seen("10.0.0.1", 100, 200));
        merge_client(&mut list, &seen("10.0.0.1", 50, 150));
        assert_eq!(list, [seen("10.0.0.1", 50, 200)]);
        for i in 0..12 {
            merge_client(&mut list, &seen(&format!("10.0.1.{i}"), 1000 + i, 1000 + i));
        }
        assert_eq!(list.len(), MAX_CLIENTS);
        assert_eq!(list[0].address, "10.0.1.11", "newest first");
        assert!(
            !list.iter().any(|c| c.address == "10.0.0.1"),
            "the oldest went"
        );
    }
}
