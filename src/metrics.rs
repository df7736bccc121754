//! Metrics: every Prometheus series of one gate, in its own registry.
//!
//! Metric names are constants here, so docs and tests cannot drift. Labels
//! are bounded sets (door, outcome, refusal code, operation, result, status
//! class): never a token id, a secret or a raw path. The hot-path series are
//! resolved once at start-up, so counting a decision is an atomic add. This
//! module sits below everything that counts (cache, store, doors, admin,
//! ops) and imports nothing of theirs; `listen.ops` serves it.

use std::time::Duration;

use http::StatusCode;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::refusal::DenyCode;

/// Metric names.
pub mod names {
    pub const DECISIONS: &str = "hawzu_gate_decisions_total";
    pub const DECISION_SECONDS: &str = "hawzu_gate_decision_duration_seconds";
    pub const CACHE_HITS: &str = "hawzu_gate_cache_hits_total";
    pub const CACHE_NEGATIVE_HITS: &str = "hawzu_gate_cache_negative_hits_total";
    pub const CACHE_MISSES: &str = "hawzu_gate_cache_misses_total";
    pub const CACHE_STALE_SERVED: &str = "hawzu_gate_cache_stale_served_total";
    pub const CACHE_DROPS: &str = "hawzu_gate_cache_drops_total";
    pub const CACHE_EVICTIONS: &str = "hawzu_gate_cache_evictions_total";
    pub const CACHE_ENTRIES: &str = "hawzu_gate_cache_entries";
    pub const STORE_CALLS: &str = "hawzu_gate_store_calls_total";
    pub const STORE_SECONDS: &str = "hawzu_gate_store_call_duration_seconds";
    pub const INVALIDATIONS: &str = "hawzu_gate_invalidations_received_total";
    pub const PUBSUB_CONNECTED: &str = "hawzu_gate_pubsub_connected";
    pub const UPSTREAM_REQUESTS: &str = "hawzu_gate_upstream_requests_total";
    pub const UPSTREAM_SECONDS: &str = "hawzu_gate_upstream_duration_seconds";
    /// Requests sent upstream a second time, on a new connection, after a
    /// kept one closed without answering.
    pub const UPSTREAM_RESENT: &str = "hawzu_gate_upstream_resent_total";
    pub const ADMIN_OPERATIONS: &str = "hawzu_gate_admin_operations_total";
    pub const READY: &str = "hawzu_gate_ready";
    pub const OPEN_CONNECTIONS: &str = "hawzu_gate_open_connections";
    pub const OVERLOAD: &str = "hawzu_gate_overload_refusals_total";
    /// Audit events by result: `recorded`, or `failed` (the change stands;
    /// the event is in the error log only).
    pub const AUDIT_EVENTS: &str = "hawzu_gate_audit_events_total";
    pub const TOKENS_EXPIRING: &str = "hawzu_gate_tokens_expiring";
    /// Runs of a fleet-wide chore by this gate, by chore and result
    /// (`done`, `failed`); one gate of a fleet runs each at a time.
    pub const CHORE_RUNS: &str = "hawzu_gate_chore_runs_total";
    /// Webhook deliveries by webhook name and result: `delivered` (a 2xx),
    /// `retried` (an attempt failed, another follows), `failed` (the last
    /// attempt failed: the event is given up).
    pub const WEBHOOK_DELIVERIES: &str = "hawzu_gate_webhook_deliveries_total";
    /// Unix time of a webhook's last delivered event (0: none yet).
    pub const WEBHOOK_LAST_SUCCESS: &str = "hawzu_gate_webhook_last_success_timestamp_seconds";
    /// Spans of the gate's own traces by result: `exported`, `dropped`
    /// (the export queue was full), `failed` (the collector refused the
    /// batch or did not take it in time). Zero while traces are off.
    pub const TRACE_SPANS: &str = "hawzu_gate_trace_spans_total";
    /// Leaked-token reports by result (see [`super::LeakResult`]).
    pub const LEAK_REPORTS: &str = "hawzu_gate_leak_reports_total";
    pub const LEAK_UNVERIFIED_BYTES: &str = "hawzu_gate_leak_unverified_bytes";
}

/// What became of a leak report, as `hawzu_gate_leak_reports_total{result}`
/// labels it: one per reported token once a request is verified, one per
/// request refused before that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakResult {
    /// A real token, revoked by this report.
    Revoked,
    /// A real token that was revoked already (a replay, another report).
    AlreadyRevoked,
    /// Not a token of this gate: malformed, a bad checksum, or unknown.
    FalsePositive,
    /// A GitHub request refused: signature, key id or body shape.
    Unverified,
    /// A body over `leaks.max_body_bytes` (or too many tokens).
    TooLarge,
    /// A public report from a client over the failed-auth limit.
    RateLimited,
    /// The store failed; the reporter is asked to send it again.
    StoreError,
    /// Refused unread: too many reports at once (`leaks.max_unverified_bytes`
    /// for GitHub's, the background lookups for the public door).
    Overloaded,
}

impl LeakResult {
    pub const ALL: [LeakResult; 8] = [
        LeakResult::Revoked,
        LeakResult::AlreadyRevoked,
        LeakResult::FalsePositive,
        LeakResult::Unverified,
        LeakResult::TooLarge,
        LeakResult::RateLimited,
        LeakResult::StoreError,
        LeakResult::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeakResult::Revoked => "revoked",
            LeakResult::AlreadyRevoked => "already_revoked",
            LeakResult::FalsePositive => "false_positive",
            LeakResult::Unverified => "unverified",
            LeakResult::TooLarge => "too_large",
            LeakResult::RateLimited => "rate_limited",
            LeakResult::StoreError => "store_error",
            LeakResult::Overloaded => "overloaded",
        }
    }
}

/// The results of `hawzu_gate_webhook_deliveries_total`.
pub const WEBHOOK_RESULTS: [&str; 3] = ["delivered", "retried", "failed"];

/// The front door a decision came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Proxy,
    Nginx,
    Traefik,
    EnvoyHttp,
    Grpc,
    /// `GET /.well-known/hawzu-token` (proxy and auth listeners).
    Inspect,
}

impl Door {
    pub const ALL: [Door; 6] = [
        Door::Proxy,
        Door::Nginx,
        Door::Traefik,
        Door::EnvoyHttp,
        Door::Grpc,
        Door::Inspect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Door::Proxy => "proxy",
            Door::Nginx => "nginx",
            Door::Traefik => "traefik",
            Door::EnvoyHttp => "envoy_http",
            Door::Grpc => "grpc",
            Door::Inspect => "inspect",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Store operations, for `store_calls_total{op}`.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    Get,
    Find,
    Create,
    Replace,
    Remove,
    List,
    Ping,
}

impl StoreOp {
    const ALL: [StoreOp; 7] = [
        StoreOp::Get,
        StoreOp::Find,
        StoreOp::Create,
        StoreOp::Replace,
        StoreOp::Remove,
        StoreOp::List,
        StoreOp::Ping,
    ];

    fn as_str(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::Find => "find",
            StoreOp::Create => "create",
            StoreOp::Replace => "replace",
            StoreOp::Remove => "remove",
            StoreOp::List => "list",
            StoreOp::Ping => "ping",
        }
    }
}

/// How a decision ended, as `hawzu_gate_decisions_total` labels it
/// (`outcome`, `code`) and the access event's `code` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with an identity.
    Allow,
    /// Passed with none (no Hawzu token, or a public route).
    Passed,
    Deny(DenyCode),
}

impl Outcome {
    /// Index in a door's row of decision counters.
    fn index(self) -> usize {
        match self {
            Outcome::Allow => 0,
            Outcome::Passed => 1,
            Outcome::Deny(c) => 2 + c as usize,
        }
    }

    /// `allow`, `passed`, or the deny code.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Passed => "passed",
            Outcome::Deny(c) => c.as_str(),
        }
    }
}

/// Upstream status classes, in `Metrics::upstream_requests` order.
const UPSTREAM_CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

/// Buckets for in-process latencies (decisions): 10 µs … 1 s.
const FAST_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];
/// Buckets for network latencies (store, upstream): 100 µs … 30 s.
const NET_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Every metric of one gate, in its own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// The name of every metric family registered, in order.
    families: Vec<String>,
    /// `[door][outcome]`: allow, passed, then each deny code
    /// ([`Outcome::index`]).
    decisions: Vec<Vec<IntCounter>>,
    decision_seconds: Vec<Histogram>,
    pub cache_hits: IntCounter,
    pub cache_negative_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_stale_served: IntCounter,
    pub cache_drops: IntCounter,
    cache_evictions: IntCounterVec,
    pub cache_entries: IntGauge,
    store_calls: IntCounterVec,
    store_seconds: HistogramVec,
    pub invalidations: IntCounter,
    pub pubsub_connected: IntGauge,
    /// `[2xx, 3xx, 4xx, 5xx, error]`, resolved once.
    upstream_requests: Vec<IntCounter>,
    pub upstream_seconds: Histogram,
    pub upstream_resent: IntCounter,
    admin_operations: IntCounterVec,
    pub ready: IntGauge,
    open_connections: IntGaugeVec,
    overload: IntCounterVec,
    audit_events: IntCounterVec,
    trace_spans: IntCounterVec,
    leak_reports: IntCounterVec,
    /// Bytes of GitHub report bodies held before their signatures are
    /// checked (of `leaks.max_unverified_bytes`).
    pub leak_unverified_bytes: IntGauge,
    /// Set by the background expiry scan (`expiring`), never per request.
    tokens_expiring: IntGaugeVec,
    chore_runs: IntCounterVec,
    webhook_deliveries: IntCounterVec,
    webhook_last_success: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// Registering fixed, distinct metrics in a fresh registry cannot fail; the
// `expect`s below are start-up invariants, never on the request path.
#[allow(clippy::expect_used)]
impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let families = std::cell::RefCell::new(Vec::new());
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            families
                .borrow_mut()
                .extend(c.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(c).expect("metric names are unique");
        };
        let decisions_vec = IntCounterVec::new(
            Opts::new(
                names::DECISIONS,
                "Decisions by front door, outcome and deny code.",
            ),
            &["door", "outcome", "code"],
        )
        .expect("valid metric");
        reg(Box::new(decisions_vec.clone()));
        let decisions =
            Door::ALL
                .iter()
                .map(|d| {
                    let mut row = vec![
                        decisions_vec.with_label_values(&[d.as_str(), "allow", "none"]),
                        decisions_vec.with_label_values(&[d.as_str(), "passed", "none"]),
                    ];
                    row.extend(DenyCode::ALL.iter().map(|c| {
                        decisions_vec.with_label_values(&[d.as_str(), "deny", c.as_str()])
                    }));
                    row
                })
                .collect();
        let decision_vec = HistogramVec::new(
            HistogramOpts::new(names::DECISION_SECONDS, "Time to decide, by front door.")
                .buckets(FAST_BUCKETS.to_vec()),
            &["door"],
        )
        .expect("valid metric");
        reg(Box::new(decision_vec.clone()));
        let decision_seconds = Door::ALL
            .iter()
            .map(|d| decision_vec.with_label_values(&[d.as_str()]))
            .collect();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let store_seconds = HistogramVec::new(
            HistogramOpts::new(
                names::STORE_SECONDS,
                "Token store call latency, by operation.",
            )
            .buckets(NET_BUCKETS.to_vec()),
            &["op"],
        )
        .expect("valid metric");
        reg(Box::new(store_seconds.clone()));
        let upstream_seconds = Histogram::with_opts(
            HistogramOpts::new(
                names::UPSTREAM_SECONDS,
                "Time to the upstream's response headers.",
            )
            .buckets(NET_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        reg(Box::new(upstream_seconds.clone()));
        let mut m = Self {
            decisions,
            decision_seconds,
            cache_hits: counter(
                names::CACHE_HITS,
                "Token lookups answered by a cached record.",
            ),
            cache_negative_hits: counter(
                names::CACHE_NEGATIVE_HITS,
                "Token lookups answered by a cached \"no such token\".",
            ),
            cache_misses: counter(names::CACHE_MISSES, "Token lookups that read the store."),
            cache_stale_served: counter(
                names::CACHE_STALE_SERVED,
                "Token lookups answered by a record the store could not confirm: past cache.ttl while the store failed (cache.stale_if_error), or read before a resubscription and its read again failing (within cache.ttl).",
            ),
            cache_drops: counter(
                names::CACHE_DROPS,
                "Whole-cache drops: the invalidation feed followed for the first time (one at start) or came back after an interruption, so changes may have been missed: every cached token is read again before its next use (kept within cache.ttl only if that read fails).",
            ),
            cache_evictions: counter_vec(
                names::CACHE_EVICTIONS,
                "Cache entries removed by capacity or expiry.",
                &["cause"],
            ),
            cache_entries: gauge(names::CACHE_ENTRIES, "Tokens held in the cache."),
            store_calls: counter_vec(
                names::STORE_CALLS,
                "Token store calls by operation and result.",
                &["op", "result"],
            ),
            store_seconds,
            invalidations: counter(
                names::INVALIDATIONS,
                "Invalidation events received from the events channel.",
            ),
            pubsub_connected: gauge(
                names::PUBSUB_CONNECTED,
                "1 while the invalidation subscription is up (always 1 on the embedded store).",
            ),
            upstream_requests: {
                let vec = counter_vec(
                    names::UPSTREAM_REQUESTS,
                    "Proxied requests by upstream status class (error: no answer).",
                    &["class"],
                );
                UPSTREAM_CLASSES
                    .iter()
                    .map(|c| vec.with_label_values(&[c]))
                    .collect()
            },
            upstream_seconds,
            upstream_resent: counter(
                names::UPSTREAM_RESENT,
                "Requests sent upstream again, on a new connection, after a kept one closed without answering (idempotent, without a body).",
            ),
            admin_operations: counter_vec(
                names::ADMIN_OPERATIONS,
                "Admin API operations by operation and result.",
                &["op", "result"],
            ),
            ready: gauge(
                names::READY,
                "1 while the whole /readyz answer (the store never left out) is ready.",
            ),
            open_connections: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        names::OPEN_CONNECTIONS,
                        "Open client connections, by listener.",
                    ),
                    &["listener"],
                )
                .expect("valid metric");
                reg(Box::new(g.clone()));
                g
            },
            overload: counter_vec(
                names::OVERLOAD,
                "Connections and requests refused at a listener's limits.",
                &["listener", "limit"],
            ),
            audit_events: counter_vec(
                names::AUDIT_EVENTS,
                "Audit events of admin changes by result (recorded, failed).",
                &["result"],
            ),
            trace_spans: counter_vec(
                names::TRACE_SPANS,
                "Spans of the gate's own traces by result (exported, dropped: the export queue was full, failed: the collector refused or timed out).",
                &["result"],
            ),
            leak_reports: counter_vec(
                names::LEAK_REPORTS,
                "Leaked-token reports by result (revoked, already_revoked, false_positive per token; unverified, too_large, rate_limited, store_error, overloaded per request).",
                &["result"],
            ),
            leak_unverified_bytes: gauge(
                names::LEAK_UNVERIFIED_BYTES,
                "Bytes of GitHub leak-report bodies held before their signatures are checked (at most leaks.max_unverified_bytes).",
            ),
            tokens_expiring: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        names::TOKENS_EXPIRING,
                        "Usable tokens expiring within 1, 7 and 30 days, by workspace (the busiest tokens.expiring_workspaces, the rest as _other); set by a background scan.",
                    ),
                    &["workspace", "within"],
                )
                .expect("valid metric");
                reg(Box::new(g.clone()));
                g
            },
            chore_runs: counter_vec(
                names::CHORE_RUNS,
                "Runs of fleet-wide chores by this gate (expiry-scan: the scan behind hawzu_gate_tokens_expiring; expiry-notices: the webhooks' token.expiring notices; unused-sweep: usage.disable_unused_after), by result (done, failed); one gate of a fleet runs each at a time.",
                &["chore", "result"],
            ),
            webhook_deliveries: counter_vec(
                names::WEBHOOK_DELIVERIES,
                "Webhook delivery attempts by webhook and result (delivered, retried, failed: given up).",
                &["webhook", "result"],
            ),
            webhook_last_success: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        names::WEBHOOK_LAST_SUCCESS,
                        "Unix time of the last event this gate delivered to a webhook (0: none yet).",
                    ),
                    &["webhook"],
                )
                .expect("valid metric");
                reg(Box::new(g.clone()));
                g
            },
            registry,
            families: Vec::new(),
        };
        m.families = families.take();
        for result in ["recorded", "failed"] {
            m.audit_events.with_label_values(&[result]);
        }
        for result in ["exported", "dropped", "failed"] {
            m.trace_spans.with_label_values(&[result]);
        }
        for result in LeakResult::ALL {
            m.leak_reports.with_label_values(&[result.as_str()]);
        }
        // Every series exists from the start, so rates work from zero.
        for op in StoreOp::ALL {
            for result in ["ok", "error", "timeout"] {
                m.store_calls.with_label_values(&[op.as_str(), result]);
            }
            m.store_seconds.with_label_values(&[op.as_str()]);
        }
        for cause in ["size", "expired"] {
            m.cache_evictions.with_label_values(&[cause]);
        }
        m
    }

    /// Counts one decision and its latency.
    pub fn decision(&self, door: Door, outcome: Outcome, elapsed: Duration) {
        if let Some(c) = self
            .decisions
            .get(door.index())
            .and_then(|row| row.get(outcome.index()))
        {
            c.inc();
        }
        if let Some(h) = self.decision_seconds.get(door.index()) {
            h.observe(elapsed.as_secs_f64());
        }
    }

    /// The open-connections gauge of a listener (`proxy`, `auth`, …).
    pub fn open_connections(&self, listener: &str) -> IntGauge {
        self.open_connections.with_label_values(&[listener])
    }

    /// The expiring-tokens gauge (`hawzu_gate_tokens_expiring`).
    pub fn tokens_expiring(&self) -> &IntGaugeVec {
        &self.tokens_expiring
    }

    /// Makes the run counters of fleet chore `chore` exist from zero (a
    /// gate that never runs it shows 0, so rates work).
    pub fn chore_started(&self, chore: &str) {
        for result in ["done", "failed"] {
            self.chore_runs.with_label_values(&[chore, result]);
        }
    }

    /// Counts a run of fleet chore `chore` by this gate.
    pub fn chore_run(&self, chore: &str, done: bool) {
        self.chore_runs
            .with_label_values(&[chore, if done { "done" } else { "failed" }])
            .inc();
    }

    /// The refusal counter of a listener's limit (`connections`, `requests`).
    pub fn overload(&self, listener: &str, limit: &str) -> IntCounter {
        self.overload.with_label_values(&[listener, limit])
    }

    /// Counts one store call.
    pub fn store_call(&self, op: StoreOp, result: &str, elapsed: Duration) {
        self.store_calls
            .with_label_values(&[op.as_str(), result])
            .inc();
        self.store_seconds
            .with_label_values(&[op.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    pub fn eviction(&self, cause: &'static str) {
        self.cache_evictions.with_label_values(&[cause]).inc();
    }

    /// Counts one upstream answer (or `None`: no answer).
    pub fn upstream(&self, status: Option<StatusCode>, elapsed: Duration) {
        let class = match status.map(|s| s.as_u16() / 100) {
            Some(2) => 0,
            Some(3) => 1,
            Some(4) => 2,
            Some(5) => 3,
            _ => 4,
        };
        if let Some(c) = self.upstream_requests.get(class) {
            c.inc();
        }
        self.upstream_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts one admin operation; `result` is `ok` or an error code.
    pub fn admin(&self, op: &'static str, result: &'static str) {
        self.admin_operations.with_label_values(&[op, result]).inc();
    }

    /// The name of every metric family this gate exports, whether or not
    /// it has a sample yet (alert rules and dashboards are checked
    /// against it: tests/alerts.rs).
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// Counts one audit event: written to the log, or not.
    pub fn audit(&self, recorded: bool) {
        let result = if recorded { "recorded" } else { "failed" };
        self.audit_events.with_label_values(&[result]).inc();
    }

    /// Makes a webhook's series exist (at zero), so rates and alerts work
    /// from its start.
    pub fn webhook_registered(&self, webhook: &str) {
        for result in WEBHOOK_RESULTS {
            self.webhook_deliveries
                .with_label_values(&[webhook, result]);
        }
        self.webhook_last_success.with_label_values(&[webhook]);
    }

    /// Counts one delivery attempt of `webhook` (`result` one of
    /// [`WEBHOOK_RESULTS`]); a delivered one also sets the last success.
    pub fn webhook(&self, webhook: &str, result: &'static str) {
        self.webhook_deliveries
            .with_label_values(&[webhook, result])
            .inc();
        if result == WEBHOOK_RESULTS[0] {
            let now = jiff::Timestamp::now().as_second();
            self.webhook_last_success
                .with_label_values(&[webhook])
                .set(now);
        }
    }

    /// Counts `n` spans of the gate's traces by result (`exported`,
    /// `dropped`, `failed`).
    pub fn trace_spans(&self, result: &str, n: u64) {
        self.trace_spans.with_label_values(&[result]).inc_by(n);
    }

    /// Counts `n` leak reports that ended as `result`.
    pub fn leak_reports(&self, result: LeakResult, n: u64) {
        self.leak_reports
            .with_label_values(&[result.as_str()])
            .inc_by(n);
    }

    /// The text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
