//! Usage in the embedded store: the hour table `(token id, hour) →
//! (allowed, refused)` and one JSON value per token with its recent clients
//! and last refusal, in the same redb file as the tokens.
//!
//! A flush is one write transaction. Hours past retention are pruned: the
//! flushed token's own at every flush, and every token's once an hour.

use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::embedded::{EmbeddedStore, USAGE_HOURS, USAGE_RECENT, unavailable};
use super::usage::{
    ClientSeen, Counts, LastRefusal, UsageDelta, UsageReport, UsageStore, hour_of, hour_start,
    later_refusal, merge_client,
};
use crate::token::TokenId;

/// A token's recent clients and last refusal, as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Recent {
    #[serde(default)]
    clients: Vec<ClientSeen>,
    #[serde(default)]
    last_refusal: Option<LastRefusal>,
}

impl Recent {
    fn read(raw: &[u8]) -> Self {
        // A value that cannot be read is started again: usage is advisory.
        serde_json::from_slice(raw).unwrap_or_default()
    }

    /// Drops what is older than `cutoff`; true when nothing is left.
    fn prune(&mut self, cutoff: Timestamp) -> bool {
        self.clients.retain(|c| c.last_seen >= cutoff);
        if self.last_refusal.as_ref().is_some_and(|r| r.at < cutoff) {
            self.last_refusal = None;
        }
        self.clients.is_empty() && self.last_refusal.is_none()
    }
}

/// The first hour still kept at `now` under `retention`.
fn first_kept_hour(now: Timestamp, retention: Duration) -> u32 {
    let hours = u32::try_from(retention.as_secs() / 3600).unwrap_or(u32::MAX);
    hour_of(now).saturating_sub(hours)
}

fn add_one(
    txn: &WriteTransaction,
    delta: &UsageDelta,
    kept_from: u32,
    cutoff: Timestamp,
) -> Result<(), StoreError> {
    let id = delta.token_id.as_str();
    if !delta.counts.is_zero() {
        let mut hours = txn.open_table(USAGE_HOURS).map_err(unavailable)?;
        let (a, r) = hours
            .get((id, delta.hour))
            .map_err(unavailable)?
            .map_or((0, 0), |v| v.value());
        hours
            .insert(
                (id, delta.hour),
                (
                    a.saturating_add(delta.counts.allowed),
                    r.saturating_add(delta.counts.refused),
                ),
            )
            .map_err(unavailable)?;
        // This token's hours past retention.
        hours
            .retain_in((id, 0)..(id, kept_from), |_, _| false)
            .map_err(unavailable)?;
    }
    if delta.clients.is_empty() && delta.last_refusal.is_none() {
        return Ok(());
    }
    let mut recent_table = txn.open_table(USAGE_RECENT).map_err(unavailable)?;
    let mut recent = recent_table
        .get(id)
        .map_err(unavailable)?
        .map(|raw| Recent::read(raw.value()))
        .unwrap_or_default();
    for c in &delta.clients {
        merge_client(&mut recent.clients, c);
    }
    recent.last_refusal = later_refusal(recent.last_refusal, delta.last_refusal.as_ref());
    recent.prune(cutoff);
    let raw = serde_json::to_vec(&recent).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    recent_table.insert(id, &raw[..]).map_err(unavailable)?;
    Ok(())
}

/// Every token's usage past retention.
fn prune_all(txn: &WriteTransaction, kept_from: u32, cutoff: Timestamp) -> Result<(), StoreError> {
    txn.open_table(USAGE_HOURS)
        .map_err(unavailable)?
        .retain(|(_, hour), _| hour >= kept_from)
        .map_err(unavailable)?;
    txn.open_table(USAGE_RECENT)
        .map_err(unavailable)?
        .retain(|_, raw| !Recent::read(raw).prune(cutoff))
        .map_err(unavailable)?;
    Ok(())
}

impl UsageStore for EmbeddedStore {
    async fn add_usage(&self, batch: &[UsageDelta], retention: Duration) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let kept_from = first_kept_hour(now, retention);
        let cutoff = hour_start(kept_from);
        let sweep = self.pruned_hour.swap(hour_of(now), Ordering::Relaxed) != hour_of(now);
        let batch = batch.to_vec();
        self.run(self.write_timeout, move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            for delta in &batch {
                add_one(&txn, delta, kept_from, cutoff)?;
            }
            if sweep {
                prune_all(&txn, kept_from, cutoff)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn usage(&self, id: &TokenId, first: u32, last: u32) -> Result<UsageReport, StoreError> {
        let id = id.clone();
        self.run(self.read_timeout, move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let hours_table = txn.open_table(USAGE_HOURS).map_err(unavailable)?;
            let mut hours = Vec::new();
            for entry in hours_table
                .range((id.as_str(), first)..=(id.as_str(), last))
                .map_err(unavailable)?
            {
                let (k, v) = entry.map_err(unavailable)?;
                let (allowed, refused) = v.value();
                hours.push((k.value().1, Counts { allowed, refused }));
            }
            let recent = txn
                .open_table(USAGE_RECENT)
                .map_err(unavailable)?
                .get(id.as_str())
                .map_err(unavailable)?
                .map(|raw| Recent::read(raw.value()))
                .unwrap_or_default();
            Ok(UsageReport {
                hours,
                clients: recent.clients,
                last_refusal: recent.last_refusal,
            })
        })
        .await
    }

    async fn daily_totals(
        &self,
        ids: &[TokenId],
        first_day: u32,
        last_day: u32,
    ) -> Result<Vec<Counts>, StoreError> {
        let ids = ids.to_vec();
        let (first, last) = (first_day * 24, last_day * 24 + 23);
        self.run(self.read_timeout, move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let hours = txn.open_table(USAGE_HOURS).map_err(unavailable)?;
            ids.iter()
                .map(|id| {
                    let mut total = Counts::default();
                    for entry in hours
                        .range((id.as_str(), first)..=(id.as_str(), last))
                        .map_err(unavailable)?
                    {
                        let (allowed, refused) = entry.map_err(unavailable)?.1.value();
                        total.add(Counts { allowed, refused });
                    }
                    Ok(total)
                })
                .collect()
        })
        .await
    }
}
