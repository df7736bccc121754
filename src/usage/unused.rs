//! The unused-token policy (`usage.disable_unused_after`, off by default):
//! a periodic task disables every enabled token unused that long — last
//! used that long ago, or never used and created that long ago — recorded
//! as `disabled_by = "policy:unused"` and logged.
//!
//! One gate of a fleet sweeps at a time (a [`ChoreHold`]); safe even when
//! two do (a hand-over): [`disable_unused`] judges and writes in one
//! compare-and-set (`store::update`), so a token is disabled once, and one
//! used or enabled in between is left alone. It is the one
//! place a token is disabled by the policy, and writes its audit event
//! (`auto_disable`, actor `gate`, with the reason).

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::audit::AuditEvent;
use crate::cache::TokenCache;
use crate::metrics::Metrics;
use crate::store::{
    ChoreHold, ListFilter, ListQuery, MAX_PAGE, Store, StoreError, TokenStore, UpdateError,
    unused_since, update,
};
use crate::token::{TokenId, TokenRecord, TokenState};

/// `disabled_by` of a token the policy disabled.
pub const DISABLED_BY: &str = "policy:unused";
/// How often the policy looks at every token (the first time at start).
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Whether `record` is enabled at `now` and has gone unused for `after`.
pub fn is_unused(record: &TokenRecord, after: Duration, now: Timestamp) -> bool {
    let Ok(after) = SignedDuration::try_from(after) else {
        return false;
    };
    let Ok(since) = now.checked_sub(after) else {
        return false;
    };
    record.state(now) == TokenState::Enabled && unused_since(record, since)
}

/// Disables token `id` if it is still enabled and unused for `after` at
/// `now` (one compare-and-set). `Some` with the record written when this
/// call disabled it; `None` when there was nothing to do (already
/// disabled, used since, gone).
pub async fn disable_unused(
    cache: &TokenCache<Store>,
    id: &TokenId,
    after: Duration,
    now: Timestamp,
) -> Result<Option<TokenRecord>, StoreError> {
    let stamp = Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now);
    // The record the write replaced, for the audit event: set by the last
    // call of the closure that asked for a change, cleared by one that did
    // not. `update` ends with a write of the last call's change, or with no
    // write when the last call asked for none (another gate's sweep, at the
    // same instant perhaps, disabled it first), so this says whether this
    // call wrote — the record it finds cannot: it may be that other write.
    let before = std::sync::Mutex::new(None);
    let written = update(cache, id, |r: &TokenRecord| {
        let unused = is_unused(r, after, now);
        if let Ok(mut b) = before.lock() {
            *b = unused.then(|| r.clone());
        }
        if !unused {
            return Ok::<_, ()>(None);
        }
        Ok(Some(TokenRecord {
            disabled_at: Some(stamp),
            disabled_by: Some(DISABLED_BY.to_owned()),
            ..r.clone()
        }))
    })
    .await;
    let stored = match written {
        Ok(stored) => stored,
        Err(UpdateError::NotFound | UpdateError::Refused(())) => return Ok(None),
        Err(UpdateError::Store(e)) => return Err(e),
    };
    let Some(before) = before.into_inner().ok().flatten() else {
        return Ok(None);
    };
    let record = stored.record;
    let unused_for = now.duration_since(record.last_used_at.unwrap_or(record.created_at));
    tracing::info!(
        target: "hawzu_gate::admin",
        op = "disable",
        token_id = %record.id,
        workspace_id = %record.workspace_id,
        by = DISABLED_BY,
        unused_days = unused_for.as_hours() / 24,
        "token disabled: unused for longer than usage.disable_unused_after"
    );
    let reason = format!(
        "unused for {} days (usage.disable_unused_after = {})",
        unused_for.as_hours() / 24,
        crate::config::short_duration(after)
    );
    cache
        .record_audit(AuditEvent::auto_disabled(now, &before, &record, reason))
        .await;
    Ok(Some(record))
}

/// The fleet chore of the sweep (`<prefix>chore:unused-sweep` in Redis).
pub const CHORE: &str = "unused-sweep";

/// One look at every enabled token; disables the unused ones. Returns how
/// many this call disabled. With a `holding`, the chore's hold is kept
/// between pages, and the sweep stops where another gate took it over.
pub async fn sweep(
    cache: &TokenCache<Store>,
    after: Duration,
    now: Timestamp,
    mut holding: Option<&mut ChoreHold<'_, Store>>,
) -> Result<usize, StoreError> {
    let mut disabled = 0;
    let mut cursor = None;
    loop {
        let page = cache
            .list(ListQuery {
                workspace: None,
                cursor,
                limit: MAX_PAGE,
                filter: ListFilter {
                    state: Some(TokenState::Enabled),
                    ..ListFilter::all(now)
                },
            })
            .await?;
        for record in page.tokens.iter().filter(|r| is_unused(r, after, now)) {
            if disable_unused(cache, &record.id, after, now)
                .await?
                .is_some()
            {
                disabled += 1;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(disabled),
        }
        if let Some(holding) = holding.as_deref_mut()
            && !holding.keep().await?
        {
            return Ok(disabled);
        }
    }
}

/// Runs [`sweep`] at start and every [`SWEEP_EVERY`] until aborted, on
/// one gate of a fleet at a time (the chore [`CHORE`], held for two
/// rounds and extended every round: the others skip it).
pub fn start(
    cache: Arc<TokenCache<Store>>,
    metrics: Arc<Metrics>,
    after: Duration,
) -> tokio::task::JoinHandle<()> {
    metrics.chore_started(CHORE);
    tokio::spawn(async move {
        loop {
            let store = cache.store();
            match ChoreHold::take(store, CHORE, SWEEP_EVERY * 2).await {
                Ok(Some(mut holding)) => {
                    match sweep(&cache, after, Timestamp::now(), Some(&mut holding)).await {
                        Ok(n) => {
                            metrics.chore_run(CHORE, true);
                            if n > 0 {
                                tracing::info!(disabled = n, "unused tokens disabled");
                            }
                        }
                        Err(e) => {
                            metrics.chore_run(CHORE, false);
                            tracing::warn!(error = %e, "the unused-token sweep failed; trying again later");
                            holding.leave().await;
                        }
                    }
                }
                // Another gate sweeps.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the unused-token sweep: the store did not say which gate sweeps; trying again later");
                }
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheOptions;
    use crate::store::EmbeddedStore;
    use crate::token::record::RECORD_VERSION;
    use crate::token::{Scope, TokenSecret};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn now() -> Timestamp {
        "2027-06-01T00:00:00Z".parse().unwrap()
    }

    fn days_ago(d: i64) -> Timestamp {
        now() - SignedDuration::from_hours(24 * d)
    }

    fn record(created: i64, used: Option<i64>) -> TokenRecord {
        TokenRecord {
            v: RECORD_VERSION,
            id: TokenId::generate().unwrap(),
            name: "CI".into(),
            workspace_id: "ws_1".into(),
            scope: Scope::Workspace {
                role: "workspace_viewer".into(),
            },
            created_by: "alice".into(),
            created_at: days_ago(created),
            expires_at: None,
            disabled_at: None,
            disabled_by: None,
            revoked_at: None,
            revoked_by: None,
            last_used_at: used.map(days_ago),
            rotated_from: None,
            description: None,
            rotated_to: None,
            allow_from: Vec::new(),
            not_before: None,
            limits_by: None,
        }
    }

    /// A cache over an embedded store in `dir`.
    async fn embedded_cache(dir: &std::path::Path) -> TokenCache<Store> {
        let store = EmbeddedStore::open(dir, Duration::from_secs(5))
            .await
            .unwrap();
        TokenCache::new(
            Store::Embedded(store),
            CacheOptions {
                ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(5),
                max_entries: 100,
                stale_if_error: Duration::ZERO,
            },
        )
    }

    #[test]
    fn unused_means_enabled_and_neither_used_nor_created_within_the_window() {
        let after = 30 * DAY;
        assert!(is_unused(&record(40, None), after, now()));
        assert!(is_unused(&record(100, Some(31)), after, now()));
        assert!(!is_unused(&record(100, Some(29)), after, now()));
        assert!(
            !is_unused(&record(10, None), after, now()),
            "unused only since its creation"
        );
        let mut expired = record(40, None);
        expired.expires_at = Some(days_ago(1));
        let mut revoked = record(40, None);
        revoked.revoked_at = Some(days_ago(1));
        let mut disabled = record(40, None);
        disabled.disabled_at = Some(days_ago(1));
        for r in [expired, revoked, disabled] {
            assert!(!is_unused(&r, after, now()), "only enabled tokens");
        }
    }

    #[tokio::test]
    async fn a_token_is_disabled_once_and_a_second_sweep_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = embedded_cache(dir.path()).await;
        let (old, used) = (record(40, None), record(40, Some(1)));
        for r in [&old, &used] {
            cache
                .create(&TokenSecret::generate().unwrap().hash(), r)
                .await
                .unwrap();
        }
        // The one never used goes, once; the one used yesterday stays.
        assert_eq!(sweep(&cache, 30 * DAY, now(), None).await.unwrap(), 1);
        assert_eq!(sweep(&cache, 30 * DAY, now(), None).await.unwrap(), 0);
        let found = cache.find(&old.id).await.unwrap().unwrap().record;
        assert_eq!(found.disabled_by.as_deref(), Some(DISABLED_BY));
        assert!(
            disable_unused(&cache, &used.id, 30 * DAY, now())
                .await
                .unwrap()
                .is_none()
        );
        // Months later, the other one is unused too.
        let later = now() + SignedDuration::from_hours(24 * 60);
        assert_eq!(sweep(&cache, 30 * DAY, later, None).await.unwrap(), 1);
    }

    /// Two gates whose sweeps started in the same millisecond both find a
    /// token enabled in their listing and both call `disable_unused` with
    /// the same instant: one disables it (and writes the audit event), the
    /// other finds it already disabled and reports nothing — it must not
    /// take the first one's write, with the same stamp, for its own.
    #[tokio::test]
    async fn a_token_disabled_by_another_sweep_at_the_same_instant_is_not_reported_twice() {
        let dir = tempfile::tempdir().unwrap();
        let cache = embedded_cache(dir.path()).await;
        let old = record(40, None);
        cache
            .create(&TokenSecret::generate().unwrap().hash(), &old)
            .await
            .unwrap();
        let first = disable_unused(&cache, &old.id, 30 * DAY, now()).await;
        assert!(first.unwrap().is_some(), "the first sweep disables it");
        let second = disable_unused(&cache, &old.id, 30 * DAY, now()).await;
        assert!(
            second.unwrap().is_none(),
            "the second sweep did nothing and must not say it did"
        );
    }
}
