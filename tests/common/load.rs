//! Steady load against the forward-auth door (`Load`), each answer judged
//! by the token's true state at send and at answer (`LoadCounts`). Makes
//! no changes (`changes::Changer` does).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{Tracked, Truth, WS1_PROJECTS, eventually};

/// The tokens a [`Load`] sends, by what the right answer is.
#[derive(Debug, Default, Clone)]
pub struct TokenMix {
    /// Valid and never changed; cached by the gate before the load starts.
    pub cached: Vec<String>,
    /// Valid, never asked before: each sent once (a store read), never
    /// reused. When the pool runs out the load counts it
    /// (`fresh_exhausted`) rather than reuse one.
    pub fresh: Vec<String>,
    /// Revoked or disabled after the gate had cached them: never allowed.
    pub revoked: Vec<String>,
    /// Changed by a [`Changer`] while the load runs: judged by their logs.
    pub tracked: Vec<std::sync::Arc<Tracked>>,
}

/// What a load saw so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadCounts {
    pub requests: u64,
    pub allowed: u64,
    /// An allow for a token that was invalid both when the request was
    /// sent and when it was answered (revoked, disabled past its bound,
    /// unknown): must stay 0.
    pub wrong_allows: u64,
    /// A 401/403 for a token valid both at send and at answer.
    pub wrong_denies: u64,
    /// 503 `store_unavailable`.
    pub unavailable: u64,
    /// 503 for a token that was cached valid (see [`Load::cache_epoch`]).
    pub cached_unavailable: u64,
    /// 503 for a fresh (uncached, valid) token.
    pub fresh_unavailable: u64,
    /// Fresh tokens sent (each once).
    pub fresh_sent: u64,
    /// Times the fresh pool was empty (a fresh token would have been
    /// reused): must stay 0.
    pub fresh_exhausted: u64,
    /// Answers about tracked tokens.
    pub tracked_requests: u64,
    /// Other 5xx answers.
    pub other_5xx: u64,
    /// No answer within 2 s.
    pub hangs: u64,
    pub max_503: Duration,
    pub max_latency: Duration,
    /// The longest a gate answered the old way about a tracked token after
    /// its change was answered (the request's send − the change's answer).
    pub max_enforcement_lag: Duration,
    /// Old-way answers to requests sent past the change's bound: must stay
    /// 0 (each is also a wrong allow or deny, unless the answer was a 503).
    pub late: u64,
}

impl LoadCounts {
    pub fn fivexx(&self) -> u64 {
        self.unavailable + self.other_5xx
    }

    /// The counts since `before` (maxima: since the last `reset_max`).
    pub fn since(&self, before: &LoadCounts) -> LoadCounts {
        LoadCounts {
            requests: self.requests - before.requests,
            allowed: self.allowed - before.allowed,
            wrong_allows: self.wrong_allows - before.wrong_allows,
            wrong_denies: self.wrong_denies - before.wrong_denies,
            unavailable: self.unavailable - before.unavailable,
            cached_unavailable: self.cached_unavailable - before.cached_unavailable,
            fresh_unavailable: self.fresh_unavailable - before.fresh_unavailable,
            fresh_sent: self.fresh_sent - before.fresh_sent,
            fresh_exhausted: self.fresh_exhausted - before.fresh_exhausted,
            tracked_requests: self.tracked_requests - before.tracked_requests,
            other_5xx: self.other_5xx - before.other_5xx,
            hangs: self.hangs - before.hangs,
            max_503: self.max_503,
            max_latency: self.max_latency,
            max_enforcement_lag: self.max_enforcement_lag,
            late: self.late - before.late,
        }
    }
}

#[derive(Default)]
struct LoadAtomics {
    requests: AtomicU64,
    allowed: AtomicU64,
    wrong_allows: AtomicU64,
    wrong_denies: AtomicU64,
    unavailable: AtomicU64,
    cached_unavailable: AtomicU64,
    fresh_unavailable: AtomicU64,
    fresh_sent: AtomicU64,
    fresh_exhausted: AtomicU64,
    tracked_requests: AtomicU64,
    other_5xx: AtomicU64,
    hangs: AtomicU64,
    max_503_us: AtomicU64,
    max_latency_us: AtomicU64,
    max_lag_us: AtomicU64,
    late: AtomicU64,
}

/// Which cached tokens are surely still in the gate's cache.
///
/// A cache entry lives `cache.ttl` from when it was put in (not from its
/// last use; `cache.stale_if_error` adds to that while the store fails),
/// so a token allowed a moment ago may be gone the next. The load knows an
/// entry's age only after a cache drop the test made and proved
/// ([`Load::cache_epoch`]): an entry put in after a drop that began at `t`
/// lives until `t + cover` at least.
struct CacheEpoch {
    id: AtomicU64,
    /// `t + cover`, as µs after the load's origin.
    until_us: AtomicU64,
    /// Per cached token: the epoch in which it was last allowed.
    allowed_in: Vec<AtomicU64>,
}

/// Worker tasks asking `/auth/nginx` about a mix of tokens (cached valid,
/// fresh valid, revoked, tracked, unknown), each at a steady pace, judging
/// every answer by the token's true state at send and at answer.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    counts: std::sync::Arc<LoadAtomics>,
    epoch: std::sync::Arc<CacheEpoch>,
    origin: Instant,
    refused_fresh: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What one request was about.
#[derive(Clone, Copy)]
enum Kind {
    Cached(usize),
    Fresh(usize),
    Revoked,
    Tracked(usize),
    Unknown,
}

impl Load {
    /// `workers` tasks, each sending one request every `period`. Of 20
    /// requests: 10 cached, 4 tracked (or cached when there are none),
    /// 2 fresh, 1 revoked, 3 unknown.
    pub fn start(auth: SocketAddr, mix: TokenMix, workers: usize, period: Duration) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(LoadAtomics::default());
        let origin = Instant::now();
        let epoch = Arc::new(CacheEpoch {
            id: AtomicU64::new(0),
            until_us: AtomicU64::new(0),
            allowed_in: (0..mix.cached.len())
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
        });
        let refused_fresh = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mix = Arc::new(mix);
        let next_fresh = Arc::new(AtomicU64::new(0));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let tasks = (0..workers)
            .map(|w| {
                let (stop, counts, mix, next_fresh, client, epoch, refused_fresh) = (
                    stop.clone(),
                    counts.clone(),
                    mix.clone(),
                    next_fresh.clone(),
                    client.clone(),
                    epoch.clone(),
                    refused_fresh.clone(),
                );
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut i = w as u64 * 7;
                    let us =
                        |t: Instant| u64::try_from((t - origin).as_micros()).unwrap_or(u64::MAX);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        i += 1;
                        let n = (i / 20) as usize;
                        let kind = match i % 20 {
                            10..=13 if !mix.tracked.is_empty() => {
                                Kind::Tracked((n * 4 + (i % 20) as usize) % mix.tracked.len())
                            }
                            0..=13 if !mix.cached.is_empty() => {
                                Kind::Cached((n * 14 + (i % 20) as usize) % mix.cached.len())
                            }
                            14 | 15 => {
                                let k = next_fresh.fetch_add(1, Ordering::Relaxed) as usize;
                                if k < mix.fresh.len() {
                                    Kind::Fresh(k)
                                } else {
                                    counts.fresh_exhausted.fetch_add(1, Ordering::Relaxed);
                                    Kind::Unknown
                                }
                            }
                            16 if !mix.revoked.is_empty() => Kind::Revoked,
                            _ => Kind::Unknown,
                        };
                        let token = match kind {
                            Kind::Cached(k) => mix.cached[k].clone(),
                            Kind::Tracked(k) => mix.tracked[k].secret.clone(),
                            Kind::Fresh(k) => {
                                counts.fresh_sent.fetch_add(1, Ordering::Relaxed);
                                mix.fresh[k].clone()
                            }
                            Kind::Revoked => mix.revoked[n % mix.revoked.len()].clone(),
                            Kind::Unknown => hawzu_gate::token::TokenSecret::generate()
                                .unwrap()
                                .expose()
                                .to_owned(),
                        };
                        let req = Request::builder()
                            .method(Method::GET)
                            .uri(format!("http://{auth}/auth/nginx"))
                            .header("authorization", format!("Bearer {token}"))
                            .header("x-original-method", "GET")
                            .header("x-original-uri", WS1_PROJECTS)
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        // Cached for sure: allowed since the last proven
                        // cache drop, which is recent enough.
                        let sent = Instant::now();
                        let epoch_now = epoch.id.load(Ordering::Acquire);
                        let surely_cached = match kind {
                            Kind::Cached(k) => {
                                epoch.allowed_in[k].load(Ordering::Relaxed) == epoch_now
                                    && us(sent) < epoch.until_us.load(Ordering::Relaxed)
                            }
                            _ => false,
                        };
                        let answer =
                            tokio::time::timeout(Duration::from_secs(2), client.request(req)).await;
                        let answered = Instant::now();
                        let took = answered - sent;
                        let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                        counts.requests.fetch_add(1, Ordering::Relaxed);
                        counts.max_latency_us.fetch_max(took_us, Ordering::Relaxed);
                        let status = match answer {
                            Ok(Ok(res)) => res.status(),
                            Ok(Err(_)) => StatusCode::BAD_GATEWAY,
                            Err(_) => {
                                counts.hangs.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        };
                        // The right answer at send and at answer.
                        let (at_send, at_answer) = match kind {
                            Kind::Cached(_) | Kind::Fresh(_) => (Truth::Valid, Truth::Valid),
                            Kind::Revoked | Kind::Unknown => (Truth::Invalid, Truth::Invalid),
                            Kind::Tracked(k) => {
                                let t = &mix.tracked[k];
                                (t.truth_at(sent), t.truth_at(answered))
                            }
                        };
                        let allowed = status.is_success();
                        let denied = matches!(status.as_u16(), 401 | 403);
                        if let Kind::Tracked(k) = kind {
                            counts.tracked_requests.fetch_add(1, Ordering::Relaxed);
                            // How long after a change a gate still answered
                            // the old way. Not while a later change is under
                            // way: it may already be in place in the store
                            // (applied, then answered 503 and retried), so an
                            // answer that follows it is not a late one.
                            if at_send != Truth::InDoubt
                                && let Some((valid, acked, bound)) =
                                    mix.tracked[k].settled_before(sent)
                                && ((allowed && !valid) || (denied && valid))
                            {
                                let lag = sent - acked;
                                counts.max_lag_us.fetch_max(
                                    u64::try_from(lag.as_micros()).unwrap_or(u64::MAX),
                                    Ordering::Relaxed,
                                );
                                if lag > bound {
                                    counts.late.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        if allowed {
                            counts.allowed.fetch_add(1, Ordering::Relaxed);
                            if at_send == Truth::Invalid && at_answer == Truth::Invalid {
                                counts.wrong_allows.fetch_add(1, Ordering::Relaxed);
                            }
                            if let Kind::Cached(k) = kind {
                                epoch.allowed_in[k].store(epoch_now, Ordering::Relaxed);
                            }
                        } else if denied {
                            if at_send == Truth::Valid && at_answer == Truth::Valid {
                                counts.wrong_denies.fetch_add(1, Ordering::Relaxed);
                            }
                        } else if status == StatusCode::SERVICE_UNAVAILABLE {
                            counts.unavailable.fetch_add(1, Ordering::Relaxed);
                            counts.max_503_us.fetch_max(took_us, Ordering::Relaxed);
                            if surely_cached {
                                counts.cached_unavailable.fetch_add(1, Ordering::Relaxed);
                            }
                            if let Kind::Fresh(_) = kind {
                                counts.fresh_unavailable.fetch_add(1, Ordering::Relaxed);
                                refused_fresh.lock().unwrap().push(token);
                            }
                        } else {
                            counts.other_5xx.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            counts,
            epoch,
            origin,
            refused_fresh,
            tasks,
        }
    }

    pub fn counts(&self) -> LoadCounts {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LoadCounts {
            requests: get(&c.requests),
            allowed: get(&c.allowed),
            wrong_allows: get(&c.wrong_allows),
            wrong_denies: get(&c.wrong_denies),
            unavailable: get(&c.unavailable),
            cached_unavailable: get(&c.cached_unavailable),
            fresh_unavailable: get(&c.fresh_unavailable),
            fresh_sent: get(&c.fresh_sent),
            fresh_exhausted: get(&c.fresh_exhausted),
            tracked_requests: get(&c.tracked_requests),
            other_5xx: get(&c.other_5xx),
            hangs: get(&c.hangs),
            max_503: Duration::from_micros(get(&c.max_503_us)),
            max_latency: Duration::from_micros(get(&c.max_latency_us)),
            max_enforcement_lag: Duration::from_micros(get(&c.max_lag_us)),
            late: get(&c.late),
        }
    }

    /// Starts the maxima afresh (per fault).
    pub fn reset_max(&self) {
        self.counts.max_503_us.store(0, Ordering::Relaxed);
        self.counts.max_latency_us.store(0, Ordering::Relaxed);
        self.counts.max_lag_us.store(0, Ordering::Relaxed);
    }

    /// Every entry the gate holds for the cached tokens was put in after
    /// `began` (the gate had never seen them, or its whole cache was
    /// dropped, provably, by a drop that began then), so each lives until
    /// `began + cover` at least (`cover` = `cache.ttl`). From now on a 503
    /// for a cached token that the load saw allowed after this call, sent
    /// before `began + cover`, counts as `cached_unavailable`. Returns
    /// `began + cover`.
    pub fn cache_epoch(&self, began: Instant, cover: Duration) -> Instant {
        let until = began + cover;
        let us = u64::try_from((until - self.origin).as_micros()).unwrap_or(u64::MAX);
        self.epoch.until_us.store(us, Ordering::Relaxed);
        self.epoch.id.fetch_add(1, Ordering::Release);
        until
    }

    /// Fresh tokens that got 503 (taken: each is returned once).
    pub fn take_refused_fresh(&self) -> Vec<String> {
        std::mem::take(&mut *self.refused_fresh.lock().unwrap())
    }

    /// Waits until `n` more requests were answered (the load's own pace,
    /// not a fixed sleep).
    pub async fn run_for(&self, n: u64, deadline: Duration) {
        let target = self.counts().requests + n;
        eventually("the load to make progress", deadline, || async {
            (self.counts().requests >= target).then_some(())
        })
        .await;
    }

    pub async fn stop(mut self) -> LoadCounts {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            t.await.expect("a load worker panicked");
        }
        self.counts()
    }
}
