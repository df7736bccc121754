//! Expiry notices (`token.expiring`): a periodic scan of the enabled tokens
//! that expire within 7 days writes, for each, one `expiry_notice` audit
//! event for the narrowest window it is in (`7d`, or `1d` once within a
//! day) — once per token, window and expiry across a fleet
//! (`TokenCache::record_once`: a claim key in Redis, a table in the
//! embedded file). The event then goes out like every other, through the
//! audit log. Runs only while a webhook subscribes to `token.expiring`;
//! never on the request path.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::audit::{AuditEvent, NOTICE_WINDOWS};
use crate::cache::TokenCache;
use crate::metrics::Metrics;
use crate::store::{ChoreHold, ListFilter, ListQuery, MAX_PAGE, Store, StoreError, TokenStore};
use crate::token::TokenState;

/// A claim outlives the expiry it is about by this much.
const CLAIM_MARGIN: SignedDuration = SignedDuration::from_hours(24);

/// The narrowest notice window `expires_at` is in at `now`, if any.
pub fn window(expires_at: Timestamp, now: Timestamp) -> Option<&'static str> {
    if expires_at <= now {
        return None;
    }
    NOTICE_WINDOWS.iter().find_map(|(label, days)| {
        now.checked_add(SignedDuration::from_hours(24 * days))
            .is_ok_and(|end| expires_at <= end)
            .then_some(*label)
    })
}

/// The fleet chore of the scan (`<prefix>chore:expiry-notices` in Redis).
pub const CHORE: &str = "expiry-notices";

/// One look at the tokens expiring within the widest window; writes the
/// notices not written yet. Returns how many this call wrote. With a
/// `holding`, the chore's hold is kept between pages, and the scan stops
/// where another gate took it over.
pub async fn scan(
    cache: &TokenCache<Store>,
    now: Timestamp,
    mut holding: Option<&mut ChoreHold<'_, Store>>,
) -> Result<usize, StoreError> {
    let widest = NOTICE_WINDOWS[NOTICE_WINDOWS.len() - 1].1;
    let by = now
        .checked_add(SignedDuration::from_hours(24 * widest))
        .unwrap_or(Timestamp::MAX);
    let mut written = 0;
    let mut cursor = None;
    loop {
        let page = cache
            .list(ListQuery {
                workspace: None,
                cursor,
                limit: MAX_PAGE,
                filter: ListFilter {
                    state: Some(TokenState::Enabled),
                    expiring_by: Some(by),
                    ..ListFilter::all(now)
                },
            })
            .await?;
        for r in &page.tokens {
            let Some(at) = r.expires_at else { continue };
            let Some(within) = window(at, now) else {
                continue;
            };
            let key = format!("expiring:{}:{within}:{}", r.id, at.as_millisecond());
            let until = at.checked_add(CLAIM_MARGIN).unwrap_or(Timestamp::MAX);
            if cache
                .record_once(&key, until, AuditEvent::expiry_notice(now, r, within))
                .await
            {
                written += 1;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(written),
        }
        if let Some(holding) = holding.as_deref_mut()
            && !holding.keep().await?
        {
            return Ok(written);
        }
    }
}

/// Runs [`scan`] soon after start and every `every` until aborted, on one
/// gate of a fleet at a time (the chore [`CHORE`], held for two rounds and
/// extended every round: the others skip it).
pub fn start(
    cache: Arc<TokenCache<Store>>,
    metrics: Arc<Metrics>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    metrics.chore_started(CHORE);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = cache.store();
            let mut holding = match ChoreHold::take(store, CHORE, every.saturating_mul(2)).await {
                Ok(Some(holding)) => holding,
                // Another gate scans.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "the expiry-notice scan: the store did not say which gate scans; trying again later");
                    continue;
                }
            };
            match scan(&cache, Timestamp::now(), Some(&mut holding)).await {
                Ok(n) => {
                    metrics.chore_run(CHORE, true);
                    if n > 0 {
                        tracing::info!(notices = n, "expiry notices written");
                    }
                }
                Err(e) => {
                    metrics.chore_run(CHORE, false);
                    tracing::warn!(error = %e, "the expiry-notice scan failed; trying again later");
                    holding.leave().await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_in_the_narrowest_window_that_holds_its_expiry() {
        let now: Timestamp = "2027-06-01T00:00:00Z".parse().unwrap();
        let in_h = |h: i64| now + SignedDuration::from_hours(h);
        assert_eq!(window(in_h(1), now), Some("1d"));
        assert_eq!(window(in_h(24), now), Some("1d"));
        assert_eq!(window(in_h(25), now), Some("7d"));
        assert_eq!(window(in_h(24 * 7), now), Some("7d"));
        assert_eq!(window(in_h(24 * 7 + 1), now), None);
        assert_eq!(window(now, now), None, "already expired");
    }
}
