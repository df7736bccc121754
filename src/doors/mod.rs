//! Front doors: each translates its protocol into request facts, calls
//! [`crate::decide::decide`], and renders the decision. No policy lives
//! here; what the doors share is the context below and the way a deny is
//! rendered over HTTP.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::cache::TokenCache;
use crate::clients::{FailedAuth, TrustedProxies, is_failed_auth};
use crate::decide::{
    Decision, DenyCode, Principal, RequestFacts, check_cached_state, decide, extract_token,
};
use crate::headers::{IdentityHeaders, REQUEST_ID};
use crate::ops::{Door, Metrics};
use crate::policy::Policy;
use crate::store::Store;
use crate::usage::UsageRecorder;

pub mod ext_authz;
pub mod forward_auth;
pub mod listener;
pub mod proxy;

/// What every door needs: the cache over the store, the policy, the header
/// names, the last-used recorder, and who clients are and may they retry.
#[derive(Debug)]
pub struct Shared {
    pub cache: Arc<TokenCache<Store>>,
    pub policy: PolicyHandle,
    pub headers: IdentityHeaders,
    pub usage: UsageRecorder,
    pub metrics: Arc<Metrics>,
    pub trusted_proxies: TrustedProxies,
    pub failed_auth: FailedAuth,
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
        Self {
            cache,
            policy,
            headers,
            usage,
            metrics,
            trusted_proxies,
            failed_auth,
            request_ids: RequestIds::new(),
        }
    }

    /// Decides for a request from `client` (worked out only when a limit
    /// needs it), counts the decision, and notes the use of an allowed token
    /// (written off the request path). A client that has used up its failed
    /// authentications is refused before its token is looked up, unless
    /// memory holds that token as valid.
    pub async fn decide<'a>(
        &self,
        door: Door,
        facts: &RequestFacts<'a>,
        client: impl Fn() -> IpAddr,
    ) -> Decision<'a> {
        let start = Instant::now();
        let policy = self.policy.load();
        let refused = self.failed_auth.anyone_refused() && self.failed_auth.is_refused(client());
        let decision = if refused && !self.holds_valid(facts).await {
            Decision::deny_only(DenyCode::RateLimited)
        } else {
            decide(&self.cache, &policy, facts).await
        };
        match &decision {
            Decision::Allow(p) => self.usage.note(p, facts.now),
            Decision::Deny(d) if is_failed_auth(d.code) => self.failed_auth.failed(client()),
            Decision::Deny(_) => {}
        }
        self.metrics
            .decision(door, decision.code(), start.elapsed());
        decision
    }

    /// Whether the request's token is in memory and usable now (no store read).
    async fn holds_valid(&self, facts: &RequestFacts<'_>) -> bool {
        let Ok(secret) = extract_token(facts.credentials) else {
            return false;
        };
        self.cache
            .cached(&secret.hash())
            .await
            .is_some_and(|r| check_cached_state(&r, facts.now).is_ok())
    }

    /// The client a request came from (see [`TrustedProxies::client`]).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.trusted_proxies.client(peer, headers)
    }

    /// The request's id: the client's `X-Request-Id` when it is sane, else a
    /// new one.
    pub fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        headers
            .get(REQUEST_ID)
            .filter(|v| {
                let b = v.as_bytes();
                !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
            })
            .cloned()
            .unwrap_or_else(|| self.request_ids.next())
    }

    /// A deny as the JSON answer every door but `/auth/nginx` gives.
    pub fn deny_response(&self, code: DenyCode, request_id: &HeaderValue) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "error": code.as_str(),
            "message": code.message(),
            "request_id": request_id.to_str().unwrap_or(""),
        });
        let mut res = listener::json(status(code), &body);
        self.deny_headers(res.headers_mut(), code);
        res.headers_mut().insert(REQUEST_ID, request_id.clone());
        res
    }

    /// The deny code header, the challenge and `Retry-After`.
    pub fn deny_headers(&self, h: &mut HeaderMap, code: DenyCode) {
        h.insert(
            self.headers.error.clone(),
            HeaderValue::from_static(code.as_str()),
        );
        if let Some(challenge) = code.challenge() {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        match code {
            DenyCode::StoreUnavailable => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            DenyCode::RateLimited => {
                h.insert(header::RETRY_AFTER, self.failed_auth.retry_after().clone());
            }
            _ => {}
        }
    }

    /// Sets the identity headers of an allowed request.
    pub fn identity(&self, h: &mut HeaderMap, p: &Principal<'_>) {
        self.headers.insert(h, p);
    }
}

/// The HTTP status of a deny code.
pub fn status(code: DenyCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::FORBIDDEN)
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

/// Request ids: a random per-process prefix and a counter; unique, cheap,
/// no system call per request.
#[derive(Debug)]
struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let mut buf = [0u8; 10];
        let prefix = match crate::token::value::fill_base62(&mut buf) {
            Ok(()) => buf.iter().map(|&b| b as char).collect(),
            Err(_) => format!("{:x}", std::process::id()),
        };
        Self {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("hg-{}-{n:x}", self.prefix))
            .unwrap_or_else(|_| HeaderValue::from_static("hg-unknown"))
    }
}
