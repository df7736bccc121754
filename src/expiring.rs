//! Expiry signals for operators: a periodic background scan of the store
//! that sets `hawzu_gate_tokens_expiring{workspace, within}` — usable
//! tokens expiring within 1, 7 and 30 days, per workspace. Never on the
//! request path: one task, `tokens.expiry_scan_interval` apart, reading the
//! store a page at a time with the store's own timeout.
//!
//! Label cardinality is bounded: the `tokens.expiring_workspaces`
//! workspaces with the most tokens expiring within 30 days are named, the
//! rest summed under `workspace="_other"`; `within` is `1d`, `7d`, `30d`.
//! Every gate of a fleet scans and reports the fleet's tokens: aggregate
//! with `max`, not `sum`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::cache::TokenCache;
use crate::metrics::Metrics;
use crate::store::{ListFilter, ListQuery, MAX_PAGE, Store, StoreError, TokenStore};

/// The windows of the gauge, as labelled, in days.
pub const WINDOWS: [(&str, i64); 3] = [("1d", 1), ("7d", 7), ("30d", 30)];
/// The label of the workspaces beyond `tokens.expiring_workspaces`.
pub const OTHER: &str = "_other";

/// Counts per workspace: tokens expiring within each of [`WINDOWS`].
pub type Counts = HashMap<String, [i64; 3]>;

/// Reads every usable token that expires within 30 days of `now`.
pub async fn scan<S: TokenStore>(store: &S, now: Timestamp) -> Result<Counts, StoreError> {
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
            None => return Ok(counts),
        }
    }
}

/// Sets the gauge to `counts`: the `max` workspaces with the most tokens
/// expiring within 30 days by name, the rest under [`OTHER`]. Series of
/// workspaces that no longer qualify are removed.
pub fn publish(metrics: &Metrics, counts: Counts, max: usize) {
    let mut rows: Vec<(String, [i64; 3])> = counts.into_iter().collect();
    rows.sort_by(|a, b| b.1[2].cmp(&a.1[2]).then_with(|| a.0.cmp(&b.0)));
    let mut other = [0i64; 3];
    let gauge = metrics.tokens_expiring();
    gauge.reset();
    for (i, (ws, row)) in rows.into_iter().enumerate() {
        if i < max {
            for (j, (label, _)) in WINDOWS.iter().enumerate() {
                gauge.with_label_values(&[ws.as_str(), label]).set(row[j]);
            }
        } else {
            for j in 0..3 {
                other[j] += row[j];
            }
        }
    }
    if other[2] > 0 {
        for (j, (label, _)) in WINDOWS.iter().enumerate() {
            gauge.with_label_values(&[OTHER, label]).set(other[j]);
        }
    }
}

/// Starts the scan task (`None` when `interval` is zero): a first scan
/// soon after start, then one per `interval`. A failed scan keeps the last
/// values and is logged.
pub fn start(
    cache: Arc<TokenCache<Store>>,
    metrics: Arc<Metrics>,
    interval: Duration,
    max_workspaces: usize,
) -> Option<tokio::task::JoinHandle<()>> {
    if interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match scan(cache.store(), Timestamp::now()).await {
                Ok(counts) => publish(&metrics, counts, max_workspaces),
                Err(e) => {
                    tracing::warn!(error = %e, "expiring-tokens scan failed; the gauge keeps its last values");
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_names_the_busiest_workspaces_and_sums_the_rest() {
        let metrics = Metrics::new();
        let counts = Counts::from([
            ("ws_a".to_owned(), [1, 2, 5]),
            ("ws_b".to_owned(), [0, 1, 3]),
            ("ws_c".to_owned(), [1, 1, 1]),
            ("ws_d".to_owned(), [0, 0, 2]),
        ]);
        publish(&metrics, counts, 2);
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
        // A later scan replaces the series: gone workspaces disappear.
        publish(&metrics, Counts::from([("ws_z".to_owned(), [0, 0, 1])]), 2);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(!text.contains("ws_a") && text.contains("ws_z"), "{text}");
    }
}
