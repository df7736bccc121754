//! Operations endpoint (`listen.ops`): `/metrics`, `/healthz`, `/readyz`.
//!
//! It renders what [`crate::metrics`] counts and asks the store whether the
//! gate is ready; it decides nothing and counts nothing of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::cache::TokenCache;
use crate::metrics::Metrics;
use crate::refusal::{Refusal, json_answer};
use crate::store::{Store, TokenStore};
use crate::web::json;

// === health ===

/// What readiness depends on besides the store.
#[derive(Debug, Default)]
pub struct Health {
    shutting_down: AtomicBool,
}

impl Health {
    /// From now on, `/readyz` answers 503 (shutdown has begun).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// The ops listener: metrics, liveness, readiness.
#[derive(Debug)]
pub struct Ops {
    cache: Arc<TokenCache<Store>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// The store error the last failed readiness check logged.
    last_store_error: Mutex<Option<String>>,
    /// The last store ping and when it answered: readiness checks within
    /// [`PING_FRESH`] of it share it, and checks at once wait for one
    /// ping (whoever reaches the ops port cannot keep the shared store
    /// busy).
    last_ping: tokio::sync::Mutex<Option<(Instant, Ping)>>,
    /// Whether a readiness check ever found the store answering and the
    /// subscription up: until then `exclude=store` excuses nothing (a gate
    /// that never reached its store has nothing cached to serve).
    was_ready: AtomicBool,
}

/// What a store ping said: `Err((log text, public text))`.
type Ping = Result<(), (String, String)>;

/// How long a store ping answers readiness checks.
const PING_FRESH: Duration = Duration::from_secs(1);

/// How long a `/readyz?exclude=store` waits for the store's ping: well
/// inside a probe's timeout (the shipped ones: 2 s).
const EXCLUDED_PING_WAIT: Duration = Duration::from_millis(500);

impl Ops {
    pub fn new(
        cache: Arc<TokenCache<Store>>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Arc<Self> {
        Arc::new(Self {
            cache,
            metrics,
            health,
            last_store_error: Mutex::new(None),
            last_ping: tokio::sync::Mutex::new(None),
            was_ready: AtomicBool::new(false),
        })
    }

    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/metrics" => {
                self.cache.sync().await;
                self.metrics
                    .cache_entries
                    .set(saturating_i64(self.cache.entry_count()));
                self.metrics
                    .pubsub_connected
                    .set(i64::from(self.cache.is_subscribed()));
                let mut res = Response::new(Full::new(Bytes::from(self.metrics.render())));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
            "/healthz" => json(StatusCode::OK, &serde_json::json!({ "status": "alive" })),
            "/readyz" => match Exclude::parse(req.uri().query()) {
                Ok(exclude) => self.readyz(exclude).await,
                Err(message) => json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": "bad_request", "message": message }),
                ),
            },
            _ => json_answer(
                Refusal::NotFound("This listener serves /metrics, /healthz and /readyz."),
                None,
            ),
        }
    }

    async fn readyz(&self, exclude: Exclude) -> Response<Full<Bytes>> {
        // A probe that leaves the store out is not held by it beyond
        // `EXCLUDED_PING_WAIT` (a store that does not answer, under a long
        // `store.timeout`, would outlast the probe's own timeout).
        let ping = if exclude.store {
            tokio::time::timeout(EXCLUDED_PING_WAIT, self.ping())
                .await
                .unwrap_or_else(|_| {
                    Err((
                        "no answer within the readiness check".into(),
                        "it timed out".into(),
                    ))
                })
        } else {
            self.ping().await
        };
        let store = match ping {
            Ok(()) => {
                self.told_store_error(None);
                "ok".to_owned()
            }
            Err((logged, public)) => {
                self.told_store_error(Some(logged));
                // Whoever reaches the ops port is told what happened, not
                // the store's own text (an address, a Redis message).
                format!("unavailable: {public}")
            }
        };
        let subscription = match self.cache.store() {
            Store::Embedded(_) => "local (embedded store)",
            Store::Redis(_) if self.cache.is_subscribed() => "up",
            Store::Redis(_) => "down",
        };
        let shutting_down = self.health.is_shutting_down();
        let store_ready = store == "ok" && subscription != "down";
        if store_ready {
            self.was_ready.store(true, Ordering::Relaxed);
        }
        // The gauge is the whole answer, whatever a probe leaves out.
        self.metrics
            .ready
            .set(i64::from(store_ready && !shutting_down));
        // Excused: a store that does not answer, once this gate has been
        // ready (its cache serves). Not a subscription down while the store
        // answers: that is this gate's own fault, and it would serve
        // revoked tokens until `cache.ttl`.
        let excused = exclude.store && store != "ok" && self.was_ready.load(Ordering::Relaxed);
        let ready = (store_ready || excused) && !shutting_down;
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut body = serde_json::json!({
            "ready": ready,
            "checks": {
                "config": "loaded",
                "store": store,
                "subscription": subscription,
                "shutting_down": shutting_down,
            },
        });
        if exclude.store {
            body["excluded"] = serde_json::json!(["store"]);
        }
        json(status, &body)
    }
}

/// The checks a `/readyz?exclude=store` leaves out of its answer (they are
/// still reported): an orchestrator's readiness probe asks so, since every
/// gate of a fleet shares one store, and a store outage that made them all
/// unready at once would leave nothing to route to — cached tokens keep
/// working meanwhile. Only once the gate has been ready (before, it has
/// nothing cached), and only a store that does not answer (a subscription
/// down while it answers is this gate's own fault). As the Kubernetes API
/// server's `/readyz?exclude=`.
#[derive(Debug, Default, Clone, Copy)]
struct Exclude {
    /// The store's ping and the invalidation subscription.
    store: bool,
}

impl Exclude {
    fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut exclude = Self::default();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            match pair {
                "exclude=store" => exclude.store = true,
                _ => {
                    return Err("/readyz takes one parameter, exclude=store (the store and its subscription left out of the answer); nothing else".into());
                }
            }
        }
        Ok(exclude)
    }
}

impl Ops {
    /// The store's answer to a ping, at most [`PING_FRESH`] old.
    async fn ping(&self) -> Ping {
        let mut last = self.last_ping.lock().await;
        if let Some((at, ping)) = &*last
            && at.elapsed() < PING_FRESH
        {
            return ping.clone();
        }
        let ping = TokenStore::ping(&*self.cache)
            .await
            .map_err(|e| (e.to_string(), e.public().to_string()));
        *last = Some((Instant::now(), ping.clone()));
        ping
    }

    /// Logs the store's error behind a failed readiness check once per
    /// change (probes ask every few seconds), and its clearing.
    fn told_store_error(&self, now: Option<String>) {
        let mut last = self
            .last_store_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *last == now {
            return;
        }
        match &now {
            Some(e) => tracing::warn!(error = %e, "readiness: the token store failed"),
            None => tracing::info!("readiness: the token store answers again"),
        }
        *last = now;
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
