//! Expiry signals for operators: a periodic background scan of the store
//! that sets `hawzu_gate_tokens_expiring{workspace, within}` — usable
//! tokens expiring within 1, 7 and 30 days, per workspace. Never on the
//! request path: one task, `tokens.expiry_scan_interval` apart, reading the
//! store a page at a time with the store's own timeout.
//!
//! Label cardinality is bounded: the `tokens.expiring_workspaces`
//! workspaces with the most tokens expiring within 30 days are named, the
//! rest summed under `workspace="_other"`; `within` is `1d`, `7d`, `30d`.
//!
//! The scan reads every token, so a fleet runs it on one gate at a time
//! (a [`Chores`] hold, [`CHORE`]), which shares the gauge's rows through
//! the store; every other gate sets its gauge from them. Each gate reports
//! the fleet's tokens: aggregate with `max`, not `sum`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::cache::TokenCache;
use crate::metrics::Metrics;
use crate::store::{
    ChoreHold, Chores, ListFilter, ListQuery, MAX_PAGE, Store, StoreError, TokenStore,
};

/// The windows of the gauge, as labelled, in days.
pub const WINDOWS: [(&str, i64); 3] = [("1d", 1), ("7d", 7), ("30d", 30)];
/// The label of the workspaces beyond `tokens.expiring_workspaces`.
pub const OTHER: &str = "_other";
/// The fleet chore of the scan (`<prefix>chore:expiry-scan` in Redis).
pub const CHORE: &str = "expiry-scan";

/// Counts per workspace: tokens expiring within each of [`WINDOWS`].
pub type Counts = HashMap<String, [i64; 3]>;

/// The gauge's rows: the named workspaces, then [`OTHER`] if any.
pub type Rows = Vec<(String, [i64; 3])>;

/// What the gate that scanned shares with the others.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Shared {
    scanned_at: Timestamp,
    rows: Rows,
}

/// Reads every usable token that expires within 30 days of `now`, keeping
/// the chore's hold (`None`: another gate took it over; this scan stops).
async fn scan<S: TokenStore + Chores>(
    store: &S,
    holding: &mut ChoreHold<'_, S>,
    now: Timestamp,
) -> Result<Option<Counts>, StoreError> {
    let by = now
        .checked_add(SignedDuration::from_hours(24 * WINDOWS[2].1))
        .unwrap_or(Timestamp::MAX);
    let mut filter = ListFilter::all(now);
    filter.expiring_by = Some(by);
    let mut counts = Counts::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(ListQuery {
                workspace: None,
                cursor,
                limit: MAX_PAGE,
                filter,
            })
            .await?;
        for r in &page.tokens {
            let Some(at) = r.expires_at else { continue };
            let row = counts.entry(r.workspace_id.clone()).or_default();
            for (i, (_, days)) in WINDOWS.iter().enumerate() {
                if now
                    .checked_add(SignedDuration::from_hours(24 * days))
                    .is_ok_and(|end| at <= end)
                {
                    row[i] += 1;
                }
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(Some(counts)),
        }
        if !holding.keep().await? {
            return Ok(None);
        }
    }
}

/// The gauge's rows for `counts`: the `max` workspaces with the most
/// tokens expiring within 30 days by name, the rest summed under
/// [`OTHER`] (absent when there is no rest).
pub fn rows(counts: Counts, max: usize) -> Rows {
    let mut rows: Rows = counts.into_iter().collect();
    rows.sort_by(|a, b| b.1[2].cmp(&a.1[2]).then_with(|| a.0.cmp(&b.0)));
    let mut other = [0i64; 3];
    for (_, row) in rows.iter().skip(max) {
        for j in 0..3 {
            other[j] += row[j];
        }
    }
    rows.truncate(max);
    if other[2] > 0 {
        rows.push((OTHER.to_owned(), other));
    }
    rows
}

/// Rows another gate shared, cut to this gate's own bound (its
/// `tokens.expiring_workspaces` may be lower): the named workspaces past
/// `max` join [`OTHER`].
pub fn recut(shared: Rows, max: usize) -> Rows {
    let mut other = [0i64; 3];
    let mut named = Counts::new();
    for (ws, row) in shared {
        if ws == OTHER {
            other = row;
        } else {
            named.insert(ws, row);
        }
    }
    let mut out = rows(named, max);
    if other[2] > 0 {
        match out.last_mut() {
            Some((ws, row)) if ws == OTHER => {
                for j in 0..3 {
                    row[j] += other[j];
                }
            }
            _ => out.push((OTHER.to_owned(), other)),
        }
    }
    out
}

/// Sets the gauge to `rows`; series of workspaces no longer in them are
/// removed.
pub fn publish(metrics: &Metrics, rows: &Rows) {
    let gauge = metrics.tokens_expiring();
    gauge.reset();
    for (ws, row) in rows {
        for (j, (label, _)) in WINDOWS.iter().enumerate() {
            gauge.with_label_values(&[ws.as_str(), label]).set(row[j]);
        }
    }
}

/// Starts the scan task (`None` when `interval` is zero): a first round
/// soon after start, then one per `interval`. Each round, the gate that
/// holds the chore (or takes it: nobody holds it) scans and shares the
/// rows; every other gate sets its gauge from the rows shared. The hold
/// lasts two intervals, so the gate that scanned keeps the chore, and a
/// gate that stopped hands it over within two. A failed round keeps the
/// last values and is logged.
pub fn start(
    cache: Arc<TokenCache<Store>>,
    metrics: Arc<Metrics>,
    interval: Duration,
    max_workspaces: usize,
) -> Option<tokio::task::JoinHandle<()>> {
    if interval.is_zero() {
        return None;
    }
    metrics.chore_started(CHORE);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            round(cache.store(), &metrics, interval, max_workspaces).await;
        }
    }))
}

/// One round of the task (see [`start`]).
async fn round<S: TokenStore + Chores>(
    store: &S,
    metrics: &Metrics,
    interval: Duration,
    max_workspaces: usize,
) {
    let hold = interval.saturating_mul(2);
    match ChoreHold::take(store, CHORE, hold).await {
        Ok(Some(mut holding)) => match scan(store, &mut holding, Timestamp::now()).await {
            Ok(Some(counts)) => {
                let rows = rows(counts, max_workspaces);
                publish(metrics, &rows);
                metrics.chore_run(CHORE, true);
                share(store, &rows, interval).await;
            }
            Ok(None) => {
                tracing::info!("expiring-tokens scan handed over to another gate");
            }
            Err(e) => {
                metrics.chore_run(CHORE, false);
                tracing::warn!(error = %e, "expiring-tokens scan failed; the gauge keeps its last values");
                holding.leave().await;
            }
        },
        Ok(None) => match store.chore_result(CHORE).await {
            Ok(Some(bytes)) => match serde_json::from_slice::<Shared>(&bytes) {
                Ok(shared) => publish(metrics, &recut(shared.rows, max_workspaces)),
                Err(e) => {
                    tracing::warn!(error = %e, "the expiring-tokens rows another gate shared could not be read; the gauge keeps its last values")
                }
            },
            // Nothing shared yet (the holder's first pass), or for three
            // intervals (a pass longer than that, at many millions of
            // tokens): another gate holds the scan, so the last values
            // stand, as after a failed scan.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the expiring-tokens rows another gate shared could not be read; the gauge keeps its last values");
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "expiring-tokens scan: the store did not say which gate scans; the gauge keeps its last values");
        }
    }
}

/// Shares `rows` with the fleet's other gates, kept three intervals (past
/// a hand-over).
async fn share<S: Chores>(store: &S, rows: &Rows, interval: Duration) {
    let shared = Shared {
        scanned_at: Timestamp::now(),
        rows: rows.clone(),
    };
    let Ok(bytes) = serde_json::to_vec(&shared) else {
        return;
    };
    if let Err(e) = store
        .share_chore_result(CHORE, &bytes, interval.saturating_mul(3))
        .await
    {
        tracing::warn!(error = %e, "the expiring-tokens rows could not be shared; the other gates keep their last values");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_counts() -> Counts {
        Counts::from([
            ("ws_a".to_owned(), [1, 2, 5]),
            ("ws_b".to_owned(), [0, 1, 3]),
            ("ws_c".to_owned(), [1, 1, 1]),
            ("ws_d".to_owned(), [0, 0, 2]),
        ])
    }

    #[test]
    fn the_gauge_names_the_busiest_workspaces_and_sums_the_rest() {
        let metrics = Metrics::new();
        let counts = sample_counts();
        publish(&metrics, &rows(counts, 2));
        let text = String::from_utf8(metrics.render()).unwrap();
        let line = |ws: &str, w: &str| {
            format!("hawzu_gate_tokens_expiring{{within=\"{w}\",workspace=\"{ws}\"}}")
        };
        assert!(
            text.contains(&format!("{} 5", line("ws_a", "30d"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1", line("ws_b", "7d"))),
            "{text}"
        );
        assert!(!text.contains("ws_c") && !text.contains("ws_d"), "{text}");
        assert!(
            text.contains(&format!("{} 3", line("_other", "30d"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1", line("_other", "1d"))),
            "{text}"
        );
        // Rows another gate shared (3 named), cut to 1 named here.
        let shared = rows(sample_counts(), 3);
        assert_eq!(
            recut(shared, 1),
            vec![
                ("ws_a".to_owned(), [1, 2, 5]),
                (OTHER.to_owned(), [1, 2, 6])
            ]
        );
        // A later scan replaces the series: gone workspaces disappear.
        publish(
            &metrics,
            &rows(Counts::from([("ws_z".to_owned(), [0, 0, 1])]), 2),
        );
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(!text.contains("ws_a") && text.contains("ws_z"), "{text}");
    }
}
