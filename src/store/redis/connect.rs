//! How the Redis store reaches Redis: the three topologies (standalone,
//! Sentinel, Cluster), connections made on first use, one bounded call on
//! a connection (with Sentinel, a failure forgets the master so the next
//! call asks the sentinels again), and `WAIT` for replicas — on a
//! connection of its own, since `WAIT` holds up every command sent after
//! it on the same connection.
//!
//! It owns connections, never keys or records: what a call does is the
//! caller's (`mod.rs`, `events`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Client, Cmd, FromRedisValue, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
    RedisFuture, Value,
};
use tokio::sync::OnceCell;

use super::{RedisStore, redis_err};
use crate::store::StoreError;

/// Store timeouts a change may take to land once begun, its caller waiting
/// one ([`RedisStore::landing`]); the embedded store's writes get as many.
const LANDING: u32 = 10;

/// Where Redis is (`store.redis.mode` and its addresses).
#[derive(Clone)]
pub enum Topology {
    /// One server (`store.redis.url`); over TLS (`rediss://`) its
    /// certificate is checked against `ca` (PEM) when given, else the
    /// system's CAs.
    Standalone { url: String, ca: Option<Arc<[u8]>> },
    /// The master that the sentinels at `sentinels` name `master_name`;
    /// `username`/`password` are the data nodes' credentials (the
    /// sentinels' own go in their URLs).
    Sentinel {
        sentinels: Vec<String>,
        master_name: String,
        username: Option<String>,
        password: Option<String>,
        /// Replicas that must hold each admin change before it is answered
        /// (`WAIT`); 0: answered once the master has it.
        replica_acks: u32,
    },
    /// A Redis Cluster reached through any of `nodes` (credentials in the
    /// first URL apply to every node).
    Cluster {
        nodes: Vec<String>,
        /// Replicas of the shard holding a token's record that must hold
        /// each admin change before it is answered (`WAIT`); `None`: every
        /// replica its master has connected then (none: answered at once);
        /// `Some(0)`: answered once the master has it.
        replica_acks: Option<u32>,
    },
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |urls: &[String]| -> Vec<String> {
            urls.iter().map(|u| crate::redact::redact_url(u)).collect()
        };
        match self {
            Self::Standalone { url, .. } => f
                .debug_struct("Standalone")
                .field("url", &crate::redact::redact_url(url))
                .finish(),
            Self::Sentinel {
                sentinels,
                master_name,
                ..
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", &redact(sentinels))
                .field("master_name", master_name)
                .finish_non_exhaustive(),
            Self::Cluster {
                nodes,
                replica_acks,
            } => f
                .debug_struct("Cluster")
                .field("nodes", &redact(nodes))
                .field("replica_acks", replica_acks)
                .finish(),
        }
    }
}

impl Topology {
    /// The mode's name, for logs.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Standalone { .. } => "standalone",
            Self::Sentinel { .. } => "sentinel",
            Self::Cluster { .. } => "cluster",
        }
    }
}

/// How the store reaches Redis.
pub(super) enum Target {
    Single {
        client: Box<Client>,
        conn: OnceCell<ConnectionManager>,
        /// The changes' own connection: its answers are waited for up to
        /// [`LANDING`] store timeouts ([`RedisStore::landing`]).
        changes: OnceCell<ConnectionManager>,
    },
    Sentinel(Arc<SentinelTarget>),
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceCell<ClusterConnection>,
        /// The changes' own client and connections: answers waited for up
        /// to [`LANDING`] store timeouts, and a `WAIT` that holds up no
        /// other caller (a node's connection is multiplexed).
        changes_client: Box<ClusterClient>,
        changes: OnceCell<ClusterConnection>,
    },
}

impl Target {
    /// The connection state for `topology`: addresses checked, nothing
    /// connected yet.
    pub(super) fn new(topology: &Topology, timeout: Duration) -> Result<Self, StoreError> {
        let invalid =
            |e: redis::RedisError| StoreError::Unavailable(format!("invalid redis URL: {e}"));
        Ok(match topology {
            Topology::Standalone { url, ca } => Target::Single {
                client: Box::new(standalone_client(url.as_str(), ca.as_deref()).map_err(invalid)?),
                conn: OnceCell::new(),
                changes: OnceCell::new(),
            },
            Topology::Sentinel {
                sentinels,
                master_name,
                username,
                password,
                replica_acks: _,
            } => Target::Sentinel(Arc::new(SentinelTarget {
                sentinel: tokio::sync::Mutex::new(
                    sentinel_client(
                        sentinels,
                        master_name,
                        username.as_deref(),
                        password.as_deref(),
                        ProtocolVersion::RESP2,
                    )
                    .map_err(invalid)?,
                ),
                master_name: master_name.clone(),
                generation: AtomicU64::new(0),
                current: Mutex::new(None),
            })),
            Topology::Cluster { nodes, .. } => {
                let client = |response: Duration| {
                    cluster_builder(
                        ClusterClientBuilder::new(nodes.iter().map(String::as_str)),
                        timeout,
                    )
                    .response_timeout(response)
                    .build()
                    .map_err(invalid)
                };
                Target::Cluster {
                    client: Box::new(client(timeout)?),
                    conn: OnceCell::new(),
                    changes_client: Box::new(client(timeout * LANDING)?),
                    changes: OnceCell::new(),
                }
            }
        })
    }
}

/// A cluster client's timeouts, the store's and the subscriber's alike.
/// Its retry waits stay the crate's: a slot answering `CLUSTERDOWN` or
/// `TRYAGAIN` is asked again only after 1.28 s, past the default
/// `store.timeout` (a 503), but the same waits pace its slot-map refreshes
/// after a request finds no node for a slot; waits of 10–100 ms were tried
/// and taken back (docs/reliability.md, "A slot in transition").
pub(super) fn cluster_builder(
    builder: ClusterClientBuilder,
    timeout: Duration,
) -> ClusterClientBuilder {
    builder
        .connection_timeout(timeout)
        .response_timeout(timeout)
}

/// The master a Sentinel set-up names, and connections to it. They are
/// dropped after any failure (or when the invalidation listener sees the
/// master move), and the next call asks the sentinels again.
pub(super) struct SentinelTarget {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    master_name: String,
    /// Bumped whenever `current` is replaced or dropped.
    generation: AtomicU64,
    /// The master's address and the connections to it; no lock is held
    /// across an await.
    current: Mutex<Option<Master>>,
}

/// The connections to the master of one generation.
struct Master {
    generation: u64,
    addr: String,
    /// Everything but admin changes: the request path's reads, usage,
    /// audit reads, webhooks.
    shared: ConnectionManager,
    /// Admin changes and their `WAIT`, on a connection of their own:
    /// answers waited for up to [`LANDING`] store timeouts, and `WAIT`
    /// blocks its connection until the replicas answer or its time is up
    /// (every command sent after it there — the request path's reads
    /// among them — would wait as long).
    changes: ConnectionManager,
}

impl Master {
    fn pick(&self, use_: Use) -> (u64, ConnectionManager) {
        let c = match use_ {
            Use::Shared => &self.shared,
            Use::Change => &self.changes,
        };
        (self.generation, c.clone())
    }
}

/// What a connection is wanted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Use {
    /// Anything that does not `WAIT`.
    Shared,
    /// A change answered once replicas hold it (`RedisStore::replicated`).
    Change,
}

impl SentinelTarget {
    fn current(&self, use_: Use) -> Option<(u64, ConnectionManager)> {
        let guard = self.current.lock().ok()?;
        guard.as_ref().map(|m| m.pick(use_))
    }

    /// Forgets the connections of `generation` (if still current).
    fn forget(&self, generation: u64) {
        if let Ok(mut guard) = self.current.lock()
            && guard.as_ref().is_some_and(|m| m.generation == generation)
        {
            *guard = None;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Forgets the connections unless they go to `master`.
    pub(super) fn forget_unless(&self, master: &str) {
        if let Ok(mut guard) = self.current.lock()
            && guard.as_ref().is_some_and(|m| m.addr != master)
        {
            *guard = None;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Asks the sentinels where the master is: its address and a client.
    async fn master(&self) -> redis::RedisResult<(String, Client)> {
        let client = self.sentinel.lock().await.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        Ok((addr, client))
    }

    /// How many replicas of the master the sentinels know and hold up
    /// (`SENTINEL REPLICAS`, flags without `s_down` or `o_down`), asked of
    /// the first sentinel that answers.
    ///
    /// A replica being promoted is still listed (as it must be: a write
    /// the old master takes after the promotion reaches only the other
    /// replicas, which then resync from the new master and drop it), and
    /// so is one the sentinel lost its link to but has not yet judged down
    /// (`disconnected`, seen for a replica being moved to the new master).
    async fn replicas_up(&self, timeout: Duration) -> Result<u32, StoreError> {
        let client = self
            .sentinel
            .lock()
            .await
            .async_get_sentinel_client()
            .await
            .map_err(redis_err)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(redis_err)?;
        let replicas: Vec<Value> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(&self.master_name)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(replicas
            .iter()
            .filter(|r| field(r, "flags").is_some_and(|f| replica_up(&f)))
            .count()
            .try_into()
            .unwrap_or(u32::MAX))
    }

    async fn connect(
        &self,
        timeout: Duration,
        use_: Use,
    ) -> Result<(u64, ConnectionManager), StoreError> {
        if let Some(c) = self.current(use_) {
            return Ok(c);
        }
        let (addr, client) = self.master().await.map_err(redis_err)?;
        let shared = ConnectionManager::new_with_config(client.clone(), manager_config(timeout));
        let changes = ConnectionManager::new_with_config(client, change_config(timeout));
        let (shared, changes) = tokio::try_join!(shared, changes).map_err(redis_err)?;
        let mut guard = self
            .current
            .lock()
            .map_err(|_| StoreError::Unavailable("sentinel state poisoned".into()))?;
        if let Some(m) = guard.as_ref() {
            // Another call connected meanwhile: share its connections.
            return Ok(m.pick(use_));
        }
        let master = Master {
            generation: self.generation.fetch_add(1, Ordering::AcqRel) + 1,
            addr,
            shared,
            changes,
        };
        let picked = master.pick(use_);
        *guard = Some(master);
        Ok(picked)
    }
}

/// Whether a replica with these Sentinel `flags` (`slave,s_down`, …) is
/// up as far as the sentinels know: not judged down.
fn replica_up(flags: &str) -> bool {
    !flags.split(',').any(|f| matches!(f, "s_down" | "o_down"))
}

/// The value of `key` in one entry of a `SENTINEL REPLICAS` answer: a
/// flat list of names and values (RESP2) or a map (RESP3).
fn field(entry: &Value, key: &str) -> Option<String> {
    let text = |v: &Value| String::from_redis_value(v.clone()).ok();
    match entry {
        Value::Array(items) => items
            .chunks(2)
            .find(|kv| kv.len() == 2 && text(&kv[0]).as_deref() == Some(key))
            .and_then(|kv| text(&kv[1])),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(key))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}

pub(super) fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
}

/// As [`manager_config`], for the changes' connection: an answer is waited
/// for up to [`LANDING`] store timeouts ([`RedisStore::landing`]).
fn change_config(timeout: Duration) -> ConnectionManagerConfig {
    manager_config(timeout).set_response_timeout(Some(timeout * LANDING))
}

/// Credentials for the data nodes of a Sentinel set-up.
fn sentinel_node_info(
    username: Option<&str>,
    password: Option<&str>,
    protocol: ProtocolVersion,
) -> SentinelNodeConnectionInfo {
    let mut redis = RedisConnectionInfo::default().set_protocol(protocol);
    if let Some(u) = username {
        redis = redis.set_username(u);
    }
    if let Some(p) = password {
        redis = redis.set_password(p);
    }
    SentinelNodeConnectionInfo::default().set_redis_connection_info(redis)
}

pub(super) fn sentinel_client(
    sentinels: &[String],
    master_name: &str,
    username: Option<&str>,
    password: Option<&str>,
    protocol: ProtocolVersion,
) -> redis::RedisResult<SentinelClient> {
    SentinelClient::build(
        sentinels.to_vec(),
        master_name,
        Some(sentinel_node_info(username, password, protocol)),
        SentinelServerType::Master,
    )
}

/// One connection, whatever the topology.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Runs `cmds` (each on one key) and returns their answers in order: a
    /// pipeline on one server, concurrent commands on a cluster (a
    /// pipeline may not span hash slots).
    pub(super) async fn each<T: FromRedisValue>(
        &mut self,
        cmds: Vec<Cmd>,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(c).await.map_err(redis_err)
            }
            Conn::Cluster(c) => {
                futures_util::future::try_join_all(cmds.into_iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<T>(&mut c).await.map_err(redis_err) }
                }))
                .await
            }
        }
    }
}

impl RedisStore {
    /// A connection for `use_`, made on first use; with its Sentinel
    /// generation.
    pub(super) async fn conn(&self, use_: Use) -> Result<(Conn, u64), StoreError> {
        let inner = &self.inner;
        match &inner.target {
            Target::Single {
                client,
                conn,
                changes,
            } => {
                let (cell, config) = match use_ {
                    Use::Shared => (conn, manager_config(inner.timeout)),
                    Use::Change => (changes, change_config(inner.timeout)),
                };
                cell.get_or_try_init(|| async {
                    ConnectionManager::new_with_config(Client::clone(client), config)
                        .await
                        .map_err(redis_err)
                })
                .await
                .map(|c| (Conn::Single(c.clone()), 0))
            }
            Target::Sentinel(target) => target
                .connect(inner.timeout, use_)
                .await
                .map(|(g, c)| (Conn::Single(c), g)),
            Target::Cluster {
                client,
                conn,
                changes_client,
                changes,
            } => {
                let (cell, client) = match use_ {
                    Use::Shared => (conn, client),
                    Use::Change => (changes, changes_client),
                };
                cell.get_or_try_init(|| async {
                    client.get_async_connection().await.map_err(redis_err)
                })
                .await
                .map(|c| (Conn::Cluster(c.clone()), 0))
            }
        }
    }

    /// Runs `f` with a connection, the whole bounded by the store timeout.
    /// With Sentinel, a failure drops the connection, so that the next call
    /// asks the sentinels where the master is now.
    pub(super) async fn timed<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.timed_on(Use::Shared, f).await
    }

    /// As [`Self::timed`], on the connection for `use_`: a change that
    /// ends in [`Self::replicated`] runs on `Use::Change`.
    pub(super) async fn timed_on<T, F, Fut>(&self, use_: Use, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.timed_within(use_, self.inner.timeout, f).await
    }

    /// As [`Self::timed_on`], the whole bounded by `limit`.
    async fn timed_within<T, F, Fut>(
        &self,
        use_: Use,
        limit: Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let generation = AtomicU64::new(u64::MAX);
        // Boxed: one allocation per store call keeps the futures of the
        // callers (every door) shallow.
        let result = tokio::time::timeout(
            limit,
            Box::pin(async {
                let (conn, g) = self.conn(use_).await?;
                generation.store(g, Ordering::Relaxed);
                f(conn).await
            }),
        )
        .await
        .unwrap_or(Err(StoreError::Timeout(limit)));
        if let (
            Err(
                StoreError::Unavailable(_)
                | StoreError::Timeout(_)
                | StoreError::Unconfirmed { .. },
            ),
            Target::Sentinel(t),
        ) = (&result, &self.inner.target)
        {
            let g = generation.load(Ordering::Relaxed);
            if g != u64::MAX {
                t.forget(g);
            }
        }
        result
    }

    /// Runs the change `f` on a connection of [`Use::Change`] in a task of
    /// its own, bounded by [`LANDING`] store timeouts, its caller waiting
    /// one: a change whose answer comes late, or whose caller is gone (it
    /// timed out, or its client hung up), still runs to its end — its
    /// event, bookkeeping and replica wait. Dropped with its caller, the
    /// change would stop wherever it was: a compare-and-set Redis took but
    /// answered late never told the other gates, which served their cached
    /// record for a whole `cache.ttl`. `landed` hears whether its answer
    /// reached the caller (`false`: it was told a timeout, or nothing).
    pub(super) async fn landing<T, F, Fut, L, LFut>(&self, f: F, landed: L) -> Result<T, StoreError>
    where
        T: Clone + Send + 'static,
        F: FnOnce(RedisStore, Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
        L: FnOnce(RedisStore, Result<T, StoreError>, bool) -> LFut + Send + 'static,
        LFut: Future<Output = ()> + Send,
    {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let store = self.clone();
        let limit = self.inner.timeout;
        tokio::spawn(async move {
            let on = store.clone();
            let caller = &tx;
            let result = store
                .timed_within(Use::Change, limit * LANDING, |conn| async move {
                    // A change not begun before its caller gave up (a
                    // connection still being made) is never begun: the
                    // caller, told 503, may already be judging the store
                    // as it found it (a rotate withdrawing its successor).
                    if caller.is_closed() {
                        return Err(StoreError::Timeout(limit));
                    }
                    f(on, conn).await
                })
                .await;
            let heard = tx.send(result.clone()).is_ok();
            landed(store, result, heard).await;
        });
        match tokio::time::timeout(limit, &mut rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Unavailable(
                "a change's task ended without an answer".to_owned(),
            )),
            // Closed, then read: an answer sent at the last moment is taken
            // (its sender saw it heard), any later one is refused (its
            // sender sees it was not).
            Err(_) => {
                rx.close();
                rx.try_recv().unwrap_or(Err(StoreError::Timeout(limit)))
            }
        }
    }

    /// With `replica_acks`, waits until every replica the sentinels hold
    /// up, and at least `replica_acks`, holds every write made so far on
    /// `conn` (`WAIT`, within the store timeout): a connection of
    /// [`Use::Change`], whose `WAIT` holds up no other caller. Sentinel replication is
    /// asynchronous: without it, a change the master took just before a
    /// fail-over is answered 200 and then lost with the old master (seen
    /// in the chaos run: 4–5 changes per fail-over). Every replica, not
    /// any one: in a planned fail-over the old master keeps taking writes
    /// after a replica was promoted, and the other replicas acknowledge
    /// them until they are moved to the new master, which never had them
    /// (2 changes lost per `SENTINEL FAILOVER` with two replicas and
    /// `WAIT 1`; tests/chaos).
    ///
    /// On a Cluster, the replicas of each shard holding one of `keys` (the
    /// token's record, what decisions read; a create's id key too, what
    /// the admin API finds it by): `WAIT` routed to each shard's master
    /// over the changes' own connections, which made the writes.
    ///
    /// A cluster's default (`replica_acks` not set) is every replica the
    /// shard's master has connected when the change is made (`ROLE`), as
    /// Sentinel's is every replica the sentinels hold up: a change a
    /// replicated shard answered survives its fail-over, and a shard with
    /// no replica (or none connected) answers at once.
    pub(super) async fn replicated(
        &self,
        conn: &mut Conn,
        keys: &[&str],
    ) -> Result<(), StoreError> {
        let minimum = self.inner.replica_acks;
        if minimum == 0 && !self.inner.follow_replicas {
            return Ok(());
        }
        let known = match &self.inner.target {
            Target::Sentinel(t) => t.replicas_up(self.inner.timeout / 4).await?,
            _ => 0,
        };
        let wanted = minimum.max(known);
        // Half the store timeout: the answer must be read before the
        // connection's own response timeout (the store timeout) fires.
        let within = self.inner.timeout / 2;
        let within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX).max(1);
        let wait = |n: u32| {
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(n).arg(within_ms);
            cmd
        };
        let acked: i64 = match conn {
            Conn::Single(c) => wait(wanted).query_async(c).await.map_err(redis_err)?,
            Conn::Cluster(c) => {
                let mut fewest = (i64::MAX, wanted);
                for key in keys {
                    let shard = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        Route::with_key(key, SlotAddr::Master),
                    ));
                    let wanted = if self.inner.follow_replicas {
                        match c.route_command(redis::cmd("ROLE"), shard.clone()).await {
                            Ok(role) => connected_replicas(&role)?,
                            // An ACL without `ROLE` (`-@dangerous`): as with
                            // `replica_acks = 0`, said once.
                            Err(e) if e.code() == Some("NOPERM") => {
                                role_refused(&e);
                                0
                            }
                            Err(e) => return Err(redis_err(e)),
                        }
                    } else {
                        wanted
                    };
                    if wanted == 0 {
                        continue;
                    }
                    let answer = c
                        .route_command(wait(wanted), shard)
                        .await
                        .map_err(redis_err)?;
                    let acked: i64 = redis::from_redis_value(answer).map_err(|e| {
                        StoreError::Unavailable(format!("redis: WAIT answered {e}"))
                    })?;
                    // One shortfall answers the call: a WAIT short of its
                    // replicas takes its whole bound, and two in a row
                    // would outlast the store timeout.
                    if acked < i64::from(wanted) {
                        fewest = (acked, wanted);
                        break;
                    }
                    fewest = (fewest.0.min(acked), fewest.1);
                }
                if fewest.0 < i64::from(fewest.1) {
                    return Err(StoreError::Unconfirmed {
                        acked: fewest.0,
                        wanted: fewest.1,
                        within,
                    });
                }
                return Ok(());
            }
        };
        if acked < i64::from(wanted) {
            return Err(StoreError::Unconfirmed {
                acked,
                wanted,
                within,
            });
        }
        Ok(())
    }
}

/// How many replicas a master's `ROLE` answer lists as connected (those
/// past their first sync). A node answering as a replica — a slot map not
/// yet moved after a fail-over — is an error, not "no replicas": the
/// change is not answered as kept until its shard's master says so.
fn connected_replicas(role: &redis::Value) -> Result<u32, StoreError> {
    match redis::from_redis_value::<redis::Role>(role.clone()) {
        Ok(redis::Role::Primary { replicas, .. }) => {
            Ok(u32::try_from(replicas.len()).unwrap_or(u32::MAX))
        }
        Ok(_) => Err(StoreError::Unavailable(
            "redis: the node holding the change's slot answered ROLE as a replica (a fail-over under way); try again".into(),
        )),
        Err(e) => Err(StoreError::Unavailable(format!("redis: ROLE answered {e}"))),
    }
}

/// Warns, once per process, that the Redis user may not run `ROLE`, so a
/// cluster's changes are answered without waiting for replicas.
fn role_refused(e: &redis::RedisError) {
    static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !TOLD.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            error = %e,
            "the Redis user may not run ROLE: admin changes are answered once the shard's master has them, without waiting for its replicas (a fail-over may undo a revoke); allow ROLE (+role) or set store.redis.cluster.replica_acks"
        );
    }
}

/// A client for one server; with `ca`, a `rediss://` server's certificate
/// must chain to it (the system's CAs otherwise).
pub(super) fn standalone_client(
    info: impl redis::IntoConnectionInfo,
    ca: Option<&[u8]>,
) -> redis::RedisResult<Client> {
    match ca {
        Some(ca) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            },
        ),
        None => Client::open(info),
    }
}

pub(super) fn resp3(url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    let info = url.into_connection_info()?;
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Ok(info.set_redis_settings(redis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_options_never_show_a_password() {
        let o = super::super::RedisOptions {
            url: "redis://:s3cret@h:6379".into(),
            key_prefix: "p:".into(),
            timeout: Duration::from_millis(250),
            retention: Duration::from_secs(60),
        };
        let dump = format!("{o:?}");
        assert!(!dump.contains("s3cret"), "{dump}");
        assert!(dump.contains("h:6379"), "{dump}");
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_replica_is_up_until_the_sentinels_judge_it_down() {
        assert!(replica_up("slave"));
        assert!(replica_up("slave,promoted"));
        assert!(replica_up("slave,disconnected,reconf_sent"));
        assert!(!replica_up("s_down,slave,disconnected"));
        assert!(!replica_up("slave,o_down"));
    }

    #[test]
    fn a_replicas_field_is_read_from_either_protocol() {
        let resp2 = Value::Array(vec![
            bulk("name"),
            bulk("127.0.0.1:7101"),
            bulk("flags"),
            bulk("slave,promoted"),
        ]);
        assert_eq!(field(&resp2, "flags").as_deref(), Some("slave,promoted"));
        let resp3 = Value::Map(vec![(bulk("flags"), bulk("s_down,slave"))]);
        assert_eq!(field(&resp3, "flags").as_deref(), Some("s_down,slave"));
        assert_eq!(field(&resp2, "port"), None);
        assert_eq!(field(&Value::Nil, "flags"), None);
    }
}
