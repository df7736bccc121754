//! Front doors: each translates its protocol into request facts, runs the
//! one request lifecycle ([`lifecycle`]: limit, decide, count, note, log),
//! and renders the decision in its protocol through [`crate::refusal`]. No
//! policy lives here, and no door counts, logs or limits on its own.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, header};

use crate::cache::TokenCache;
use crate::clients::{FailedAuth, TrustedProxies};
use crate::decide::Client;
use crate::decide::{RequestFacts, check_cached_state, extract_token};
use crate::headers::IdentityHeaders;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::refusal::Render;
use crate::store::Store;
use crate::traces::{CallerTrace, TRACEPARENT, TRACESTATE, Traces};
use crate::usage::UsageRecorder;
use crate::web::RequestIds;

pub mod deadline;
pub mod ext_authz;
pub mod forward_auth;
pub mod inspect;
pub mod lifecycle;
pub mod listener;
pub mod proxy;
pub mod rendered;
pub mod upstream;

/// The caller's W3C trace context in `headers` (for the request's span),
/// taken from `peer` only when it is a trusted proxy.
pub fn trace_context<'h>(
    headers: &'h HeaderMap,
    peer: IpAddr,
    trusted_proxies: &TrustedProxies,
) -> CallerTrace<'h> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    CallerTrace {
        traceparent: get(TRACEPARENT),
        tracestate: get(TRACESTATE),
        trusted: trusted_proxies.trusts(peer.to_canonical()),
    }
}

/// What every door needs: the cache over the store, the policy, the header
/// names, the last-used recorder, who clients are and may they retry, and
/// how refusals are rendered.
#[derive(Debug)]
pub struct Shared {
    pub cache: Arc<TokenCache<Store>>,
    pub policy: PolicyHandle,
    pub headers: IdentityHeaders,
    pub usage: UsageRecorder,
    pub metrics: Arc<Metrics>,
    pub trusted_proxies: TrustedProxies,
    pub failed_auth: FailedAuth,
    pub render: Render,
    /// The tracer when traces are on (`telemetry.otlp_endpoint`); `None`
    /// costs a request one branch.
    pub traces: Option<Arc<Traces>>,
    request_ids: RequestIds,
}

/// The current policy; replaced as a whole on reload (readers never see a
/// half-applied one, and a request keeps the policy it started with).
pub type PolicyHandle = Arc<ArcSwap<Policy>>;

impl Shared {
    pub fn new(
        cache: Arc<TokenCache<Store>>,
        policy: PolicyHandle,
        headers: IdentityHeaders,
        usage: UsageRecorder,
        trusted_proxies: TrustedProxies,
        failed_auth: FailedAuth,
    ) -> Self {
        let metrics = cache.metrics().clone();
        let render = Render::new(headers.error().clone(), failed_auth.retry_after().clone());
        Self {
            cache,
            policy,
            headers,
            usage,
            metrics,
            trusted_proxies,
            failed_auth,
            render,
            traces: None,
            request_ids: RequestIds::new(),
        }
    }

    /// Spans for every request, exported by `traces`.
    pub fn with_traces(mut self, traces: Option<Arc<Traces>>) -> Self {
        self.traces = traces;
        self
    }

    /// Whether the request's token is in memory and usable now (no store read).
    pub(crate) async fn holds_valid(&self, facts: &RequestFacts<'_>) -> bool {
        let Ok(secret) = extract_token(facts.credentials, &self.policy.load().prefixes) else {
            return false;
        };
        self.cache
            .cached(&secret.hash())
            .await
            .is_some_and(|r| check_cached_state(&r, facts.now).is_ok())
    }

    /// The client a request came from (see
    /// [`TrustedProxies::request_client`]).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        self.trusted_proxies.request_client(peer, headers)
    }

    /// The request's id: the client's `X-Request-Id` when it is sane, else a
    /// new one.
    pub fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        self.request_ids.of(headers)
    }
}

/// The `Authorization` headers of a request as decision input.
pub fn credentials(headers: &HeaderMap) -> crate::decide::Credentials<'_> {
    use crate::decide::Credentials;
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (None, _) => Credentials::None,
        (Some(v), None) => Credentials::One(v.as_bytes()),
        (Some(_), Some(_)) => Credentials::Several,
    }
}
