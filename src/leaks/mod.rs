//! Leaked tokens revoke themselves: the `listen.leaks` listener (off unless
//! set; meant to be reachable from the internet, which the admin API never
//! is) with two doors.
//!
//! - `POST /v1/leaks/github` — GitHub's secret-scanning partner protocol
//!   (`github`): the body's signature is checked with the key GitHub names
//!   (`keys`) before anything else is read from it; every reported value
//!   that parses with the deployment's prefixes and checksum is looked up
//!   by hash and, when real, revoked (`revoke`); the answer is GitHub's
//!   feedback (`true_positive` / `false_positive` per value).
//! - `POST /v1/leaks` — the public report door, for everyone else: no
//!   authentication (the holder of a secret may always kill it), every
//!   report counted against the client's failed-auth bucket, and the same
//!   answer (202, same body shape, same work before it) for a real and an
//!   unknown token: the lookup runs after the answer, so neither the
//!   status, the body nor the time tells whether a guess was right.
//!
//! A body is refused with 413 by its `Content-Length` before it is read, or
//! as soon as it passes `leaks.max_body_bytes`. Before a GitHub report's
//! signature is checked its body is all a stranger can make the gate hold,
//! so it is read only under a key GitHub lists, only within the gate-wide
//! `leaks.max_unverified_bytes`, counted by the bytes that came, and one
//! report's worth per client address (`share`; past either, 503
//! `overloaded`), and only when it comes whole within
//! `limits.body_read_timeout` (GitHub sends it at once; 408 `body_timeout`);
//! and an address whose reports keep failing waits (the failed-auth
//! buckets the public door uses). A value that fails its
//! checksum is answered from memory: no store read. This module never logs
//! a reported value (only its token's id once found), and never answers an
//! admin request.

pub mod github;
pub mod keys;
pub mod revoke;
mod share;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full, Limited};
use jiff::Timestamp;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::audit::Origin;
use crate::cache::TokenCache;
use crate::clients::{FailedAuth, TrustedProxies};
use crate::config::Settings;
use crate::doors::PolicyHandle;
use crate::doors::listener::{Conn, TimedBody, is_body_timeout};
use crate::metrics::{LeakResult, Metrics};
use crate::store::Store;
use crate::token::TokenSecret;
use crate::web::{REQUEST_ID, RequestIds, json};

use github::{Feedback, KEY_ID_HEADER, Label, Match, SIGNATURE_HEADER, token_hash};
use keys::{GithubKeys, KeyError};
use revoke::{Found, Sighting, revoke_leaked};
use share::{Exhausted, Held, Shares};

/// The GitHub door's path.
pub const GITHUB_PATH: &str = "/v1/leaks/github";
/// The public report door's path.
pub const PUBLIC_PATH: &str = "/v1/leaks";
/// Largest public report (one token and where it was seen).
pub const PUBLIC_MAX_BODY: usize = 8 * 1024;
/// Longest a GitHub report may take — its key list read, its body, its
/// judging — well inside GitHub's 30 s.
pub const GITHUB_DEADLINE: Duration = Duration::from_secs(20);
/// The GitHub door's body limit, as a refusal names it.
const GITHUB_LIMIT: &str = "leaks.max_body_bytes";
/// The public door's body limit, as a refusal names it.
const PUBLIC_LIMIT: &str = "8 KiB";
/// Reported values looked up at once within one GitHub report.
const LOOKUPS_AT_ONCE: usize = 16;
/// Public reports being looked up after their answer, at most.
const BACKGROUND_AT_ONCE: usize = 64;
/// Longest a public report's lookup and revocation may take, each try.
const BACKGROUND_DEADLINE: Duration = Duration::from_secs(10);
/// How long a public report the store fails is tried again.
const PUBLIC_RETRY_FOR: Duration = Duration::from_secs(3600);
/// The longest wait between two tries of a public report.
const PUBLIC_RETRY_MAX_WAIT: Duration = Duration::from_secs(30);

/// The error codes of this listener (`error` in a refusal's JSON body).
pub mod codes {
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const BODY_TIMEOUT: &str = "body_timeout";
    pub const BAD_BODY: &str = "bad_body";
    pub const SIGNATURE_MISSING: &str = "signature_missing";
    pub const SIGNATURE_INVALID: &str = "signature_invalid";
    pub const UNKNOWN_KEY: &str = "unknown_key";
    pub const KEYS_UNAVAILABLE: &str = "keys_unavailable";
    pub const NOT_A_TOKEN: &str = "not_a_token";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const OVERLOADED: &str = "overloaded";
    pub const STORE_UNAVAILABLE: &str = "store_unavailable";
}

/// A public report (other fields, such as a scanner's `type`, are ignored).
/// `Debug` never shows the token.
#[derive(Deserialize)]
struct PublicReport {
    token: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    source: String,
}

impl std::fmt::Debug for PublicReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicReport")
            .field("token", &"***")
            .field("url", &self.url)
            .field("source", &self.source)
            .finish()
    }
}

/// The leaks listener's handler.
#[derive(Debug)]
pub struct Leaks {
    cache: Arc<TokenCache<Store>>,
    policy: PolicyHandle,
    keys: GithubKeys,
    max_body: usize,
    max_tokens: usize,
    /// Public reports per client: the doors' limit, its own buckets.
    failed_auth: FailedAuth,
    trusted_proxies: TrustedProxies,
    metrics: Arc<Metrics>,
    background: Arc<Semaphore>,
    /// Bytes of GitHub bodies held before their signature is checked
    /// (`leaks.max_unverified_bytes`), one permit a byte.
    unverified: Semaphore,
    /// What each client address holds of it: one report's worth at most.
    shares: Shares,
    /// Longest a GitHub body may take to arrive whole.
    body_deadline: Duration,
    request_ids: RequestIds,
}

impl Leaks {
    /// The handler for `s.leaks`; public reports are limited like failed
    /// authentications (`s.failed_auth`, buckets of its own).
    pub fn new(
        cache: Arc<TokenCache<Store>>,
        policy: PolicyHandle,
        s: &Settings,
    ) -> Result<Arc<Self>, KeyError> {
        let settings = &s.leaks;
        let keys = GithubKeys::new(settings)?;
        let shares = Shares::new(
            settings.max_body_bytes,
            cache.metrics().leak_unverified_bytes.clone(),
        );
        Ok(Arc::new(Self {
            metrics: cache.metrics().clone(),
            cache,
            policy,
            keys,
            max_body: settings.max_body_bytes,
            max_tokens: settings.max_tokens_per_report,
            failed_auth: FailedAuth::new(&s.failed_auth),
            trusted_proxies: TrustedProxies::new(&s.trusted_proxies),
            background: Arc::new(Semaphore::new(BACKGROUND_AT_ONCE)),
            unverified: Semaphore::new(settings.unverified_budget()),
            shares,
            body_deadline: s.limits.body_read_timeout.0,
            request_ids: RequestIds::new(),
        }))
    }

    /// GitHub's keys (tests read how often they were fetched).
    pub fn keys(&self) -> &GithubKeys {
        &self.keys
    }

    /// Serves one request of the leaks listener.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<TimedBody>,
        conn: Conn,
    ) -> Response<Full<Bytes>> {
        let request_id = self.request_ids.of(req.headers());
        let http1 = req.version() < Version::HTTP_2;
        let mut res = match req.uri().path() {
            GITHUB_PATH | PUBLIC_PATH if req.method() != Method::POST => refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                codes::METHOD_NOT_ALLOWED,
                "Send the report with POST.",
            ),
            GITHUB_PATH => self.github(req, conn.peer.ip(), &request_id).await,
            PUBLIC_PATH => self.public(req, conn.peer.ip(), &request_id).await,
            _ => refuse(
                StatusCode::NOT_FOUND,
                codes::NOT_FOUND,
                "This listener serves POST /v1/leaks/github (GitHub secret scanning) and POST /v1/leaks (anyone).",
            ),
        };
        if http1
            && matches!(
                res.status(),
                StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
            )
        {
            // The rest of the body is never read: the connection goes.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res.headers_mut().insert(REQUEST_ID, request_id);
        res
    }

    // === the GitHub door ===

    async fn github(
        &self,
        req: Request<TimedBody>,
        peer: IpAddr,
        request_id: &HeaderValue,
    ) -> Response<Full<Bytes>> {
        // The whole report — its key, its body, its judging — within
        // GITHUB_DEADLINE, well inside GitHub's 30 s.
        let deadline = tokio::time::Instant::now() + GITHUB_DEADLINE;
        // The reporter as `trusted_proxies` says (an ingress in front).
        let peer = self.trusted_proxies.client(peer, req.headers());
        // An address whose reports keep failing (forged, unknown keys,
        // bodies too slow or too large) waits, as a key guesser does: one
        // address cannot keep the body budget full for everyone.
        if self.failed_auth.is_refused(peer) {
            return self.rate_limited(
                "Too many failed reports from this address; wait and send it again.",
            );
        }
        if let Some(res) = self.too_large(req.headers(), self.max_body, GITHUB_LIMIT) {
            self.failed_auth.failed(peer);
            return res;
        }
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (Some(key_id), Some(signature)) = (header(KEY_ID_HEADER), header(SIGNATURE_HEADER))
        else {
            self.metrics.leak_reports(LeakResult::Unverified, 1);
            self.failed_auth.failed(peer);
            return refuse(
                StatusCode::UNAUTHORIZED,
                codes::SIGNATURE_MISSING,
                "A report needs the Github-Public-Key-Identifier and Github-Public-Key-Signature headers.",
            );
        };
        // Not cut short: a fetch cancelled midway would leave the key list
        // marked tried but not failed (its last list then not served past
        // its TTL); `leaks.github_keys_timeout` (≤ 10 s) bounds it.
        let key = match self.keys.key(&key_id).await {
            Ok(k) => k,
            Err(KeyError::Unknown(_)) => {
                self.metrics.leak_reports(LeakResult::Unverified, 1);
                self.failed_auth.failed(peer);
                tracing::warn!(client = %peer, "leak report refused: unknown key id");
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    codes::UNKNOWN_KEY,
                    "The key list (leaks.github_keys_url or leaks.github_keys_file) does not name the key in Github-Public-Key-Identifier (or no longer does).",
                );
            }
            Err(e @ KeyError::Unavailable(_)) => {
                self.metrics.leak_reports(LeakResult::Unverified, 1);
                tracing::error!(error = %e, "leak report not judged: no keys");
                return retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::KEYS_UNAVAILABLE,
                    "The secret-scanning keys cannot be read now; send the report again.",
                );
            }
        };
        // The body is held only within the budget, counted by the bytes
        // that came (a body trickling in holds what it sent, not what it
        // declared), at most one report's worth per address, and only
        // while it comes whole in time; given back once the signature
        // holds (or the report is refused).
        let mut held = self.shares.hold(&self.unverified, peer);
        let body_start = tokio::time::Instant::now();
        let body_due = body_start + self.body_deadline;
        let read = tokio::time::timeout_at(
            deadline.min(body_due),
            self.read_held(req.into_body(), self.max_body, &mut held),
        );
        let body = match read.await {
            Ok(Ok(b)) => b,
            Ok(Err(Unread::Full(full))) => {
                self.metrics.leak_reports(LeakResult::Overloaded, 1);
                tracing::warn!(client = %peer, ?full, "leak report refused: leaks.max_unverified_bytes in use");
                return retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::OVERLOADED,
                    match full {
                        Exhausted::Budget => {
                            "Too many report bodies are being read (leaks.max_unverified_bytes); send it again shortly."
                        }
                        Exhausted::Share => {
                            "This address has as many report bytes being read as one report may hold (leaks.max_body_bytes); send it again shortly."
                        }
                    },
                );
            }
            Ok(Err(Unread::Refused(res))) => {
                if res.status() != StatusCode::PAYLOAD_TOO_LARGE {
                    self.metrics.leak_reports(LeakResult::Unverified, 1);
                }
                self.failed_auth.failed(peer);
                return res;
            }
            // Cut by the report's own deadline before the body had its
            // time (the gate's key read took the rest): not the sender's
            // failure, sent again. A body that had half the deadline or its
            // own timeout is the sender's, as any slow body.
            Err(_)
                if deadline < body_due
                    && deadline - body_start < self.body_deadline.min(GITHUB_DEADLINE / 2) =>
            {
                self.metrics.leak_reports(LeakResult::Overloaded, 1);
                return retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::OVERLOADED,
                    "The report took too long; send it again.",
                );
            }
            Err(_) => {
                self.metrics.leak_reports(LeakResult::Unverified, 1);
                self.failed_auth.failed(peer);
                return body_timeout();
            }
        };
        if key.verify(&signature, &body).is_err() {
            self.metrics.leak_reports(LeakResult::Unverified, 1);
            self.failed_auth.failed(peer);
            tracing::warn!(client = %peer, key_id = %key.id, "leak report refused: bad signature");
            return refuse(
                StatusCode::UNAUTHORIZED,
                codes::SIGNATURE_INVALID,
                "The signature does not match the body and the named key.",
            );
        }
        drop(held);
        let matches: Vec<Match> = match serde_json::from_slice(&body) {
            Ok(m) => m,
            Err(e) => {
                self.metrics.leak_reports(LeakResult::Unverified, 1);
                return refuse(
                    StatusCode::BAD_REQUEST,
                    codes::BAD_BODY,
                    &format!(
                        "The body is not a JSON array of {{token, type, url, source}}: {}",
                        crate::redact::redact_secrets(&e.to_string())
                    ),
                );
            }
        };
        if matches.len() > self.max_tokens {
            self.metrics.leak_reports(LeakResult::TooLarge, 1);
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::PAYLOAD_TOO_LARGE,
                "The report holds more tokens than leaks.max_tokens_per_report; send them in parts.",
            );
        }
        let origin = Origin {
            actor: "leaks:github".to_owned(),
            client: Some(peer.to_string()),
            request_id: request_id.to_str().ok().map(str::to_owned),
        };
        let judged = tokio::time::timeout_at(deadline, self.judge_all(&matches, &origin)).await;
        match judged {
            Ok(Ok(feedback)) => {
                let value = serde_json::to_value(&feedback).unwrap_or_default();
                json(StatusCode::OK, &value)
            }
            Ok(Err(())) => {
                self.metrics.leak_reports(LeakResult::StoreError, 1);
                retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::STORE_UNAVAILABLE,
                    "The token store failed; send the report again (what was revoked stays revoked).",
                )
            }
            Err(_) => {
                self.metrics.leak_reports(LeakResult::StoreError, 1);
                retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::STORE_UNAVAILABLE,
                    "The report took too long; send it again (what was revoked stays revoked).",
                )
            }
        }
    }

    /// Every match judged (some at once), in order; `Err` when the store
    /// failed for one.
    async fn judge_all(&self, matches: &[Match], origin: &Origin) -> Result<Vec<Feedback>, ()> {
        let now = Timestamp::now();
        let policy = self.policy.load_full();
        let policy = &policy;
        // By index: a closure over `&Match` would be higher-ranked, which
        // the listener's `Send` check cannot see through.
        let labels: Vec<Result<Label, ()>> = futures_util::stream::iter(0..matches.len())
            .map(|i| async move {
                let m = &matches[i];
                // A value that does not parse (checksum included) is
                // judged in memory: no store read.
                let Ok(secret) = TokenSecret::parse_with(&m.token, &policy.prefixes) else {
                    self.metrics.leak_reports(LeakResult::FalsePositive, 1);
                    return Ok(Label::FalsePositive);
                };
                let sighting = Sighting {
                    reporter: "github",
                    url: &m.url,
                    source: &m.source,
                };
                // Only GitHub signs these: a repeat is GitHub's retry.
                match revoke_leaked(&self.cache, &secret, origin, &sighting, now, true).await {
                    Ok(found) => Ok(self.count(found)),
                    Err(e) => {
                        tracing::error!(error = %e, "a leak report could not be judged");
                        Err(())
                    }
                }
            })
            .buffered(LOOKUPS_AT_ONCE)
            .collect()
            .await;
        matches
            .iter()
            .zip(labels)
            .map(|(m, label)| {
                label.map(|label| Feedback {
                    token_hash: token_hash(&m.token),
                    token_type: m.token_type.clone(),
                    label,
                })
            })
            .collect()
    }

    fn count(&self, found: Found) -> Label {
        match found {
            Found::Revoked => {
                self.metrics.leak_reports(LeakResult::Revoked, 1);
                Label::TruePositive
            }
            Found::AlreadyRevoked => {
                self.metrics.leak_reports(LeakResult::AlreadyRevoked, 1);
                Label::TruePositive
            }
            Found::Unknown => {
                self.metrics.leak_reports(LeakResult::FalsePositive, 1);
                Label::FalsePositive
            }
        }
    }

    // === the public door ===

    async fn public(
        self: &Arc<Self>,
        req: Request<TimedBody>,
        peer: IpAddr,
        request_id: &HeaderValue,
    ) -> Response<Full<Bytes>> {
        let request_id = request_id.to_str().ok().map(str::to_owned);
        let client = self.trusted_proxies.client(peer, req.headers());
        if self.failed_auth.is_refused(client) {
            return self
                .rate_limited("Too many reports from this address; wait and send it again.");
        }
        // Every report costs one failure, found or not: guessing at this
        // door is as slow as at the others.
        self.failed_auth.failed(client);
        if let Some(res) = self.too_large(req.headers(), PUBLIC_MAX_BODY, PUBLIC_LIMIT) {
            return res;
        }
        let body = match self
            .read(req.into_body(), PUBLIC_MAX_BODY, PUBLIC_LIMIT)
            .await
        {
            Ok(b) => b,
            Err(res) => return res,
        };
        let report: PublicReport = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    codes::BAD_BODY,
                    &format!(
                        "The body is not a JSON object {{\"token\": \"…\", \"url\": \"…\", \"source\": \"…\"}}: {}",
                        crate::redact::redact_secrets(&e.to_string())
                    ),
                );
            }
        };
        let policy = self.policy.load_full();
        // The format and checksum are public knowledge: saying a value is
        // not a token tells a guesser nothing.
        let Ok(secret) = TokenSecret::parse_with(report.token.trim(), &policy.prefixes) else {
            self.metrics.leak_reports(LeakResult::FalsePositive, 1);
            return refuse(
                StatusCode::BAD_REQUEST,
                codes::NOT_A_TOKEN,
                "The value is not an access token of this gate (prefix, length, characters or checksum).",
            );
        };
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            self.metrics.leak_reports(LeakResult::Overloaded, 1);
            let mut res = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::OVERLOADED,
                "Too many reports are being handled; send it again shortly.",
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return res;
        };
        let hash = token_hash(secret.expose());
        // Looked up after the answer: real and unknown tokens are answered
        // alike, in the same time.
        let (this, hash_shown) = (self.clone(), hash.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let origin = Origin {
                actor: "leaks:public".to_owned(),
                client: Some(client.to_string()),
                request_id,
            };
            let sighting = Sighting {
                reporter: "public",
                url: &report.url,
                source: &report.source,
            };
            // The reporter was told it is revoked and will not send it
            // again: a lookup the store fails is tried again, backing off,
            // until the store answers (or for PUBLIC_RETRY_FOR), holding
            // its slot — reports beyond them meanwhile are told to wait.
            let give_up = tokio::time::Instant::now() + PUBLIC_RETRY_FOR;
            let mut wait = Duration::from_secs(1);
            let mut tried = false;
            loop {
                let judged = tokio::time::timeout(
                    BACKGROUND_DEADLINE,
                    // Anyone may send a public report again; only this
                    // loop's own next try may repeat one whose answer was
                    // lost.
                    revoke_leaked(
                        &this.cache,
                        &secret,
                        &origin,
                        &sighting,
                        Timestamp::now(),
                        tried,
                    ),
                )
                .await;
                let why = match judged {
                    Ok(Ok(found)) => {
                        this.count(found);
                        return;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "it took too long".to_owned(),
                };
                this.metrics.leak_reports(LeakResult::StoreError, 1);
                let token_hash = hash_shown.as_str();
                if tokio::time::Instant::now() + wait > give_up {
                    tracing::error!(
                        error = %why,
                        token_hash,
                        "a public leak report could not be judged for {}: if the value is a token of this gate, it is NOT revoked; revoke it by hand",
                        crate::config::short_duration(PUBLIC_RETRY_FOR)
                    );
                    return;
                }
                tracing::warn!(
                    error = %why,
                    token_hash,
                    "a public leak report could not be judged; trying again in {}",
                    crate::config::short_duration(wait)
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(PUBLIC_RETRY_MAX_WAIT);
                tried = true;
            }
        });
        json(
            StatusCode::ACCEPTED,
            &serde_json::json!({
                "status": "received",
                "token_hash": hash,
                "message": "Thank you. If this is a token of this gate, it is revoked now.",
            }),
        )
    }

    /// 429 for an address over its failed-auth bucket, counted.
    fn rate_limited(&self, message: &str) -> Response<Full<Bytes>> {
        self.metrics.leak_reports(LeakResult::RateLimited, 1);
        let mut res = refuse(StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED, message);
        res.headers_mut()
            .insert(header::RETRY_AFTER, self.failed_auth.retry_after().clone());
        res
    }

    // === bodies ===

    /// 413 when `Content-Length` says the body is over `max` (`limit`
    /// names it).
    fn too_large(
        &self,
        headers: &HeaderMap,
        max: usize,
        limit: &str,
    ) -> Option<Response<Full<Bytes>>> {
        let declared = declared_length(headers)?;
        (declared > max as u64).then(|| self.payload_too_large(limit))
    }

    fn payload_too_large(&self, limit: &str) -> Response<Full<Bytes>> {
        self.metrics.leak_reports(LeakResult::TooLarge, 1);
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            &format!("The body is larger than this door accepts ({limit})."),
        )
    }

    /// The body, at most `max` bytes.
    /// A GitHub body, at most `max` bytes, each held in `held` as it
    /// comes.
    async fn read_held(
        &self,
        mut body: TimedBody,
        max: usize,
        held: &mut Held<'_>,
    ) -> Result<Bytes, Unread> {
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Unread::Refused(self.unreadable(&*e)))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len().saturating_add(data.len()) > max {
                return Err(Unread::Refused(self.payload_too_large(GITHUB_LIMIT)));
            }
            held.grow(data.len()).map_err(Unread::Full)?;
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    }

    /// The answer to a body that could not be read: too slow, or broken.
    fn unreadable(&self, e: &(dyn std::error::Error + 'static)) -> Response<Full<Bytes>> {
        if is_body_timeout(e) {
            body_timeout()
        } else {
            refuse(
                StatusCode::BAD_REQUEST,
                codes::BAD_BODY,
                "The body could not be read.",
            )
        }
    }

    async fn read(
        &self,
        body: TimedBody,
        max: usize,
        limit: &str,
    ) -> Result<Bytes, Response<Full<Bytes>>> {
        match Limited::new(body, max).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(self.payload_too_large(limit))
            }
            Err(e) if is_body_timeout(&*e) => Err(body_timeout()),
            Err(_) => Err(refuse(
                StatusCode::BAD_REQUEST,
                codes::BAD_BODY,
                "The body could not be read.",
            )),
        }
    }
}

/// Why a GitHub body was not read whole.
enum Unread {
    /// The budget, or the sender's share of it, is in use.
    Full(Exhausted),
    /// Refused for the body itself (too large, too slow, broken).
    Refused(Response<Full<Bytes>>),
}

/// The body's `Content-Length`, when it declares one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// 408: the body came too slowly.
fn body_timeout() -> Response<Full<Bytes>> {
    refuse(
        StatusCode::REQUEST_TIMEOUT,
        codes::BODY_TIMEOUT,
        "The body came too slowly.",
    )
}

/// A refusal: `{"error", "message"}`.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "error": code, "message": message }),
    )
}

/// `status` (503, or 429 for this reporter alone) with `Retry-After`: the
/// reporter should send it again.
fn retry_later(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let mut res = refuse(status, code, message);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_report_never_shows_its_token() {
        let r: PublicReport =
            serde_json::from_str(r#"{"token":"hwz_s3cretvalue","url":"https://x"}"#).unwrap();
        let dump = format!("{r:?}");
        assert!(!dump.contains("s3cretvalue"), "{dump}");
        assert!(dump.contains("https://x"), "{dump}");
    }
}
