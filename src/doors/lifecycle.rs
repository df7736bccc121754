//! The one request lifecycle every door runs, whatever its protocol:
//!
//! ```text
//! begin ─ asked(method, path) ─┬─ decide(facts) ─┬─ [door forwards or answers] ─ finish(status)
//!                              └─ unjudgeable ───┘        └─ failed(refusal)
//! ```
//!
//! - **timing**: from `begin` (the access event's latency) and around the
//!   decision alone (`hawzu_gate_decision_duration_seconds`);
//! - **the failed-auth limit**: a client that has used up its failed
//!   authentications is refused before its token is looked up, unless
//!   memory holds that token as valid; a failed authentication counts
//!   against the client;
//! - **usage**: a known token's request is counted, allowed or refused,
//!   with its client (written off the path);
//! - **metrics**: every decision, judged or not, is counted once by door
//!   and outcome;
//! - **the access log**: one event per request, with the outcome code of
//!   the decision or of the fault that ended it;
//! - **the span** (only when traces are on, `telemetry.otlp_endpoint`): one
//!   per request, a child of the caller's `traceparent`, with the decision,
//!   the cache's answer and the store time, ended with the status. Off, the
//!   exchange holds `None` and nothing is allocated.
//!
//! A door never does any of these itself; it only turns its protocol into
//! facts and renders what comes back. Nothing here blocks, and the client
//! address is worked out only when a limit or a known token needs it.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{self, CachedRecord};
use crate::clients::is_failed_auth;
use crate::decide::pass::would_pass;
use crate::decide::{Decision, Deny, RequestFacts, decide, extract_token};
use crate::metrics::{Door, Outcome};
use crate::policy::Policy;
use crate::refusal::{DenyCode, Refusal};
use crate::telemetry::{self, Access, redact_path};
use crate::token::TokenHash;
use crate::traces::{CallerTrace, RequestSpan, attr};

use super::Shared;

/// One request's passage through a door, from `begin` to `finish`.
#[derive(Debug)]
#[must_use = "an exchange ends with `finish`, which logs it"]
pub struct Exchange<'s, 'r> {
    shared: &'s Shared,
    door: Door,
    start: Instant,
    /// Method and path for the access event: kept only when events are on.
    asked: Option<(Cow<'r, str>, Cow<'r, str>)>,
    /// The token's record, when the decision found one (for the event).
    record: Option<Arc<CachedRecord>>,
    /// `allow`, `passed`, or the code of the refusal that ended the request.
    outcome: &'static str,
    /// The request's span, when traces are on (boxed: an exchange without
    /// one stays small).
    span: Option<Box<RequestSpan>>,
}

/// The hash of the token `facts` present, for the usage writer (asked once
/// a minute per token: the request path already looked it up by it).
fn token_hash(facts: &RequestFacts<'_>, policy: &Policy) -> Option<TokenHash> {
    extract_token(facts.credentials, &policy.prefixes)
        .ok()
        .map(|s| s.hash())
}

impl Shared {
    /// Begins a request at `door`: the clock starts here.
    pub fn begin<'r>(&self, door: Door) -> Exchange<'_, 'r> {
        Exchange {
            shared: self,
            door,
            start: Instant::now(),
            asked: None,
            record: None,
            outcome: "allow",
            span: None,
        }
    }
}

impl<'s, 'r> Exchange<'s, 'r> {
    /// Whether this request will be logged (access events are on). A door
    /// that must copy something for the event asks first.
    pub fn logging(&self) -> bool {
        telemetry::access_enabled()
    }

    /// Starts the request's span when traces are on: `caller` gives the
    /// caller's `traceparent` and `tracestate` and whether the gate takes
    /// them from this peer, and is asked only then.
    pub fn trace<'h>(&mut self, caller: impl FnOnce() -> CallerTrace<'h>) {
        if let Some(traces) = &self.shared.traces {
            let span = traces.span(self.door.as_str(), caller());
            self.span = Some(Box::new(span));
        }
    }

    /// Whether this request has a span (traces are on).
    pub fn traced(&self) -> bool {
        self.span.is_some()
    }

    /// The `traceparent` for the upstream when this request's span is
    /// recorded (it names the gate's span as the parent); `None` when
    /// traces are off or the span is not sampled: the caller's header then
    /// goes on unchanged.
    pub fn traceparent(&self) -> Option<String> {
        self.span.as_ref().and_then(|s| s.traceparent())
    }

    /// Whether the caller's `tracestate` must not reach the upstream: the
    /// request's span is in a trace of the gate's own (an untrusted
    /// caller's trace is linked, not joined).
    pub fn drops_tracestate(&self) -> bool {
        self.span.as_ref().is_some_and(|s| s.drops_tracestate())
    }

    /// What the request asked for, as the access event and the span show
    /// it (the original request's method and path at the forward-auth
    /// doors).
    pub fn asked(&mut self, method: impl Into<Cow<'r, str>>, path: impl Into<Cow<'r, str>>) {
        let logging = self.logging();
        if logging || self.span.is_some() {
            let (method, path) = (method.into(), path.into());
            if let Some(span) = self.span.as_deref_mut().filter(|s| s.is_recording()) {
                let path = path.split_once('?').map_or(&*path, |(p, _)| p);
                span.set(attr::METHOD, method.to_string());
                span.set(attr::PATH, redact_path(path).into_owned());
            }
            if logging {
                self.asked = Some((method, path));
            }
        }
    }

    /// Decides for the request, with the failed-auth limit around it; counts
    /// the decision and notes a known token's use (allowed, or refused).
    /// The facts' client address is worked out only when a limit, a token's
    /// `allow_from` or its usage needs it; `agent` is the `User-Agent`.
    pub async fn decide<'a>(
        &mut self,
        facts: &RequestFacts<'a>,
        agent: Option<&[u8]>,
    ) -> Decision<'a> {
        if self.span.is_none() {
            return self.decide_untraced(facts, agent).await;
        }
        // Boxed here and below: a traced request is the rare one, and each
        // await's future is part of every request's (see `cache::lookup`).
        let (decision, note) = Box::pin(cache::noting(self.decide_untraced(facts, agent))).await;
        self.note_decision(decision.outcome(), &note);
        decision
    }

    async fn decide_untraced<'a>(
        &mut self,
        facts: &RequestFacts<'a>,
        agent: Option<&[u8]>,
    ) -> Decision<'a> {
        let shared = self.shared;
        let start = Instant::now();
        let client = || facts.client.key().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let limited =
            shared.failed_auth.anyone_refused() && shared.failed_auth.is_refused(client());
        let policy = shared.policy.load();
        // A limited client is refused before its token is looked up; a
        // request that presents no Hawzu token looks nothing up, and passes
        // where it would.
        let decision =
            if limited && !Box::pin(shared.holds_valid(facts)).await && !would_pass(&policy, facts)
            {
                Decision::deny_only(DenyCode::RateLimited)
            } else {
                decide(&shared.cache, &policy, facts).await
            };
        match &decision {
            Decision::Allow(p) => {
                shared
                    .usage
                    .note(p, || token_hash(facts, &policy), facts.now);
                shared
                    .usage
                    .count(&p.record, None, facts.now, client, agent);
            }
            Decision::Deny(d) => {
                // Refusals count per token only when the token is known.
                if let Some(record) = &d.record {
                    shared
                        .usage
                        .count(record, Some(d.code), facts.now, client, agent);
                }
                if is_failed_auth(d.code) {
                    shared.failed_auth.failed(client());
                }
            }
            Decision::Pass(_) => {}
        }
        let outcome = decision.outcome();
        shared.metrics.decision(self.door, outcome, start.elapsed());
        self.record = decision.record();
        self.outcome = outcome.as_str();
        decision
    }

    /// Steps 1-5 alone (token, state, context limits), for a request that
    /// asks about its own token (self-inspection): the failed-auth limit
    /// around it, counted and logged as a decision (`allow` when the token
    /// is valid), and a use of a known token as a decision's is (its usage:
    /// whoever holds a leaked value and looks it up leaves a trace).
    pub async fn authenticate(
        &mut self,
        facts: &RequestFacts<'_>,
        agent: Option<&[u8]>,
    ) -> Result<Arc<CachedRecord>, Deny> {
        if self.span.is_none() {
            return self.authenticate_untraced(facts, agent).await;
        }
        let (result, note) = cache::noting(self.authenticate_untraced(facts, agent)).await;
        let outcome = match &result {
            Ok(_) => Outcome::Allow,
            Err(d) => Outcome::Deny(d.code),
        };
        self.note_decision(outcome, &note);
        result
    }

    async fn authenticate_untraced(
        &mut self,
        facts: &RequestFacts<'_>,
        agent: Option<&[u8]>,
    ) -> Result<Arc<CachedRecord>, Deny> {
        let shared = self.shared;
        let start = Instant::now();
        let client = || facts.client.key().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let limited =
            shared.failed_auth.anyone_refused() && shared.failed_auth.is_refused(client());
        let result = if limited && !shared.holds_valid(facts).await {
            Err(Deny {
                code: DenyCode::RateLimited,
                record: None,
                detail: None,
            })
        } else {
            crate::decide::authenticate(&shared.cache, &shared.policy.load().prefixes, facts).await
        };
        let outcome = match &result {
            Ok(record) => {
                let hash = || token_hash(facts, &shared.policy.load());
                shared.usage.note_record(record, hash, facts.now);
                shared.usage.count(record, None, facts.now, client, agent);
                Outcome::Allow
            }
            Err(d) => {
                if let Some(record) = &d.record {
                    shared
                        .usage
                        .count(record, Some(d.code), facts.now, client, agent);
                }
                if is_failed_auth(d.code) {
                    shared.failed_auth.failed(client());
                }
                Outcome::Deny(d.code)
            }
        };
        shared.metrics.decision(self.door, outcome, start.elapsed());
        self.record = match &result {
            Ok(r) => Some(r.clone()),
            Err(d) => d.record.clone(),
        };
        self.outcome = outcome.as_str();
        result
    }

    /// The request does not say what it asks about (a proxy left out the
    /// original request, a check without HTTP attributes): refused with
    /// `code` without deciding, counted as a decision like any other.
    pub fn unjudgeable(&mut self, code: DenyCode) -> Decision<'static> {
        self.note_decision(Outcome::Deny(code), &cache::LookupNote::default());
        self.shared
            .metrics
            .decision(self.door, Outcome::Deny(code), self.start.elapsed());
        self.outcome = code.as_str();
        Decision::deny_only(code)
    }

    /// The request was allowed but then failed (the upstream failed, the
    /// body came too slowly): the event shows this refusal's code.
    pub fn failed(&mut self, refusal: Refusal) {
        self.outcome = refusal.code();
    }

    /// Puts the decision and what the cache did on the span.
    fn note_decision(&mut self, outcome: Outcome, note: &cache::LookupNote) {
        let Some(span) = self.span.as_deref_mut().filter(|s| s.is_recording()) else {
            return;
        };
        let decision = match outcome {
            Outcome::Allow => "allow",
            Outcome::Passed => "passed",
            Outcome::Deny(_) => "deny",
        };
        span.set(attr::DECISION, decision);
        if let Some(used) = note.cache.get() {
            span.set(attr::CACHE, used.as_str());
            let us = note.store.get().as_micros();
            span.set(attr::STORE_TIME_US, i64::try_from(us).unwrap_or(i64::MAX));
        }
    }

    /// Ends the request: ends its span and logs its access event with the
    /// answer's status.
    pub fn finish(mut self, status: u16, request_id: Option<&str>) {
        if let Some(mut span) = self.span.take() {
            if span.is_recording() {
                if !matches!(self.outcome, "allow" | "passed") {
                    span.set(attr::CODE, self.outcome);
                }
                if let Some(r) = &self.record {
                    // The public id only: never the secret or its hash.
                    span.set(attr::TOKEN_ID, r.id().to_owned());
                    span.set(attr::WORKSPACE_ID, r.workspace_id().to_owned());
                }
            }
            span.end(status);
        }
        if !self.logging() {
            return;
        }
        let (method, path) = self.asked.as_ref().map_or(("", ""), |(m, p)| (&**m, &**p));
        telemetry::access(&Access {
            request_id: request_id.unwrap_or(""),
            door: self.door,
            method,
            path,
            status,
            code: self.outcome,
            record: self.record.as_deref(),
            elapsed: self.start.elapsed(),
        });
    }
}
