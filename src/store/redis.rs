//! The Redis store: tokens shared by a fleet of gates.
//!
//! Key schema (under `store.redis.key_prefix`, see docs/design.md):
//! `token:{hash-hex}` → record JSON, `id:{token_id}` → hash hex,
//! `ws:{workspace_id}` and `all` → sorted sets of token ids scored by
//! creation time, channel `events` → `{"op":"invalidate","hash":…}`.
//!
//! Every call is bounded by `timeout`. Three topologies (`store.redis.mode`):
//! a standalone server (a `ConnectionManager`, reconnecting by itself), a
//! Sentinel set-up (a `ConnectionManager` to the master the sentinels name,
//! looked up again after any failure, since a fail-over moves it) and a
//! Redis Cluster (the `redis` crate's cluster connection, which follows
//! `MOVED` and fail-overs). Connections are made on first use, so a gate
//! starts even while Redis is away. Each command touches one key (the
//! compare-and-set is a one-key script); what a standalone server gets as a
//! pipeline, a cluster gets as concurrent single commands, since a pipeline
//! may not span hash slots. In cluster mode the events go over sharded
//! pub/sub (`SPUBLISH`/`SSUBSCRIBE`): one shard carries them instead of the
//! whole cluster bus.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, FromRedisValue, IntoConnectionInfo, ProtocolVersion,
    PushInfo, RedisConnectionInfo, RedisFuture, Script, Value,
};
use tokio::sync::OnceCell;

use super::list::Batch;
use super::{Cursor, ListQuery, Page, StoreError, Stored, TokenStore, created_ms, paginate};
use crate::token::{TokenHash, TokenId, TokenRecord};

/// Replaces a record only if it still holds the expected bytes.
/// ARGV: expected, new, expire-at in ms since the epoch (0 = no expiry).
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
";

/// Tries of a cluster invalidation that no subscriber received, and the
/// pause between them (kept well inside `store.timeout`).
const PUBLISH_ATTEMPTS: u32 = 3;
const PUBLISH_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Index entries fetched per round trip while listing.
const SCAN_BATCH: usize = 200;

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL (may carry a password; never logged).
    pub url: String,
    pub key_prefix: String,
    /// Bound on every call, connection included.
    pub timeout: Duration,
    /// How long revoked and expired records are kept (Redis TTL).
    pub retention: Duration,
}

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
    Cluster { nodes: Vec<String> },
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |urls: &[String]| -> Vec<String> {
            urls.iter().map(|u| crate::config::redact_url(u)).collect()
        };
        match self {
            Self::Standalone { url, .. } => f
                .debug_struct("Standalone")
                .field("url", &crate::config::redact_url(url))
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
            Self::Cluster { nodes } => f
                .debug_struct("Cluster")
                .field("nodes", &redact(nodes))
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

/// A token store in Redis.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// `WAIT` for this many replicas after each admin change (Sentinel).
    replica_acks: u32,
    prefix: String,
    topology: Topology,
    timeout: Duration,
    retention: Duration,
    compare_and_set: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

// === connections ===

/// How the store reaches Redis.
enum Target {
    Single {
        client: Box<Client>,
        conn: OnceCell<ConnectionManager>,
    },
    Sentinel(Arc<SentinelTarget>),
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceCell<ClusterConnection>,
    },
}

/// The master a Sentinel set-up names, and a connection to it. The
/// connection is dropped after any failure (or when the invalidation
/// listener sees the master move), and the next call asks the sentinels
/// again.
struct SentinelTarget {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// Bumped whenever `current` is replaced or dropped.
    generation: AtomicU64,
    /// The master's address and a connection to it; no lock is held across
    /// an await.
    current: Mutex<Option<(u64, String, ConnectionManager)>>,
}

impl SentinelTarget {
    fn current(&self) -> Option<(u64, ConnectionManager)> {
        let guard = self.current.lock().ok()?;
        guard.as_ref().map(|(g, _, c)| (*g, c.clone()))
    }

    /// Forgets the connection of `generation` (if still current).
    fn forget(&self, generation: u64) {
        if let Ok(mut guard) = self.current.lock()
            && guard.as_ref().is_some_and(|(g, _, _)| *g == generation)
        {
            *guard = None;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Forgets the connection unless it goes to `master`.
    fn forget_unless(&self, master: &str) {
        if let Ok(mut guard) = self.current.lock()
            && guard.as_ref().is_some_and(|(_, addr, _)| addr != master)
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

    async fn connect(&self, timeout: Duration) -> Result<(u64, ConnectionManager), StoreError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let (addr, client) = self.master().await.map_err(redis_err)?;
        let conn = ConnectionManager::new_with_config(client, manager_config(timeout))
            .await
            .map_err(redis_err)?;
        let mut guard = self
            .current
            .lock()
            .map_err(|_| StoreError::Unavailable("sentinel state poisoned".into()))?;
        if let Some((g, _, c)) = guard.as_ref() {
            // Another call connected meanwhile: share its connection.
            return Ok((*g, c.clone()));
        }
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *guard = Some((generation, addr, conn.clone()));
        Ok((generation, conn))
    }
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
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

fn sentinel_client(
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
enum Conn {
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
    async fn each<T: FromRedisValue>(&mut self, cmds: Vec<Cmd>) -> Result<Vec<T>, StoreError> {
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
    /// A standalone server at `options.url`. Checks the URL; connects
    /// lazily, on first use.
    pub fn new(options: RedisOptions) -> Result<Self, StoreError> {
        let topology = Topology::Standalone {
            url: options.url.clone(),
            ca: None,
        };
        Self::with_topology(topology, options)
    }

    /// A store on `topology` (`options.url` is not used). Checks the
    /// addresses; connects lazily, on first use.
    pub fn with_topology(topology: Topology, options: RedisOptions) -> Result<Self, StoreError> {
        let invalid =
            |e: redis::RedisError| StoreError::Unavailable(format!("invalid redis URL: {e}"));
        let target = match &topology {
            Topology::Standalone { url, ca } => Target::Single {
                client: Box::new(standalone_client(url.as_str(), ca.as_deref()).map_err(invalid)?),
                conn: OnceCell::new(),
            },
            Topology::Sentinel {
                sentinels,
                master_name,
                username,
                password,
                ..
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
                generation: AtomicU64::new(0),
                current: Mutex::new(None),
            })),
            Topology::Cluster { nodes } => Target::Cluster {
                client: Box::new(
                    ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                        .connection_timeout(options.timeout)
                        .response_timeout(options.timeout)
                        .build()
                        .map_err(invalid)?,
                ),
                conn: OnceCell::new(),
            },
        };
        let replica_acks = match &topology {
            Topology::Sentinel { replica_acks, .. } => *replica_acks,
            _ => 0,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                replica_acks,
                topology,
                prefix: options.key_prefix,
                timeout: options.timeout,
                retention: options.retention,
                compare_and_set: Script::new(COMPARE_AND_SET),
            }),
        })
    }

    /// Where this store's Redis is.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// A connection, made on first use; with its Sentinel generation.
    async fn conn(&self) -> Result<(Conn, u64), StoreError> {
        let inner = &self.inner;
        match &inner.target {
            Target::Single { client, conn } => conn
                .get_or_try_init(|| async {
                    ConnectionManager::new_with_config(
                        Client::clone(client),
                        manager_config(inner.timeout),
                    )
                    .await
                    .map_err(redis_err)
                })
                .await
                .map(|c| (Conn::Single(c.clone()), 0)),
            Target::Sentinel(target) => target
                .connect(inner.timeout)
                .await
                .map(|(g, c)| (Conn::Single(c), g)),
            Target::Cluster { client, conn } => conn
                .get_or_try_init(|| async {
                    client.get_async_connection().await.map_err(redis_err)
                })
                .await
                .map(|c| (Conn::Cluster(c.clone()), 0)),
        }
    }

    /// Runs `f` with a connection, the whole bounded by the store timeout.
    /// With Sentinel, a failure drops the connection, so that the next call
    /// asks the sentinels where the master is now.
    async fn timed<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let limit = self.inner.timeout;
        let generation = AtomicU64::new(u64::MAX);
        // Boxed: one allocation per store call keeps the futures of the
        // callers (every door) shallow.
        let result = tokio::time::timeout(
            limit,
            Box::pin(async {
                let (conn, g) = self.conn().await?;
                generation.store(g, Ordering::Relaxed);
                f(conn).await
            }),
        )
        .await
        .unwrap_or(Err(StoreError::Timeout(limit)));
        if let (Err(StoreError::Unavailable(_) | StoreError::Timeout(_)), Target::Sentinel(t)) =
            (&result, &self.inner.target)
        {
            let g = generation.load(Ordering::Relaxed);
            if g != u64::MAX {
                t.forget(g);
            }
        }
        result
    }

    /// Publishes the invalidation of `hash` (sharded on a cluster).
    async fn publish(&self, conn: &mut Conn, hash: &TokenHash) -> Result<(), StoreError> {
        let channel = self.events_channel();
        let event = Self::event(hash);
        let Conn::Cluster(c) = conn else {
            let _: Value = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&event)
                .query_async(conn)
                .await
                .map_err(redis_err)?;
            return Ok(());
        };
        // SPUBLISH answers how many subscribers of that node got the event.
        // Every ready gate subscribes, this one included, so none means it
        // went to a node nobody listens on — a slot map not yet caught up
        // with a fail-over: refresh and send again, briefly.
        for attempt in 0..PUBLISH_ATTEMPTS {
            // A keyed read in the channel's slot first: right after a
            // fail-over the slot map may still name the old master, now a
            // replica, which takes an SPUBLISH for its own subscribers
            // only; the read gets MOVED and refreshes the map.
            let _: Value = redis::cmd("EXISTS")
                .arg(&channel)
                .query_async(c)
                .await
                .map_err(redis_err)?;
            let receivers: i64 = redis::cmd("SPUBLISH")
                .arg(&channel)
                .arg(&event)
                .query_async(c)
                .await
                .map_err(redis_err)?;
            if receivers > 0 {
                return Ok(());
            }
            if attempt + 1 < PUBLISH_ATTEMPTS {
                tokio::time::sleep(PUBLISH_RETRY_PAUSE).await;
            }
        }
        tracing::warn!(
            "an invalidation reached no subscriber (a cluster fail-over in progress, or no gate subscribed yet); other gates enforce the change within cache.ttl"
        );
        Ok(())
    }

    /// With `replica_acks`, waits until that many replicas hold every write
    /// made so far on `conn` (`WAIT`, within the store timeout). Sentinel
    /// replication is asynchronous: without it, a change the master took
    /// just before a fail-over is answered 200 and then lost with the old
    /// master (seen in the chaos run: 4–5 changes per fail-over).
    async fn replicated(&self, conn: &mut Conn) -> Result<(), StoreError> {
        let wanted = self.inner.replica_acks;
        if wanted == 0 {
            return Ok(());
        }
        // Half the store timeout: the answer must be read before the
        // connection's own response timeout (the store timeout) fires.
        let within = self.inner.timeout / 2;
        let acked: i64 = redis::cmd("WAIT")
            .arg(wanted)
            .arg(u64::try_from(within.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(conn)
            .await
            .map_err(redis_err)?;
        if acked < i64::from(wanted) {
            return Err(StoreError::Unavailable(format!(
                "the change reached the master, but {acked} of {wanted} replicas confirmed it within {within:?}: a fail-over could lose it; try again"
            )));
        }
        Ok(())
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        let mut k = String::with_capacity(self.inner.prefix.len() + kind.len() + rest.len());
        k.push_str(&self.inner.prefix);
        k.push_str(kind);
        k.push_str(rest);
        k
    }

    fn token_key(&self, hash: &TokenHash) -> String {
        self.key("token:", &hash.to_hex())
    }

    fn id_key(&self, id: &str) -> String {
        self.key("id:", id)
    }

    fn index_key(&self, workspace: Option<&str>) -> String {
        match workspace {
            Some(ws) => self.key("ws:", ws),
            None => self.key("all", ""),
        }
    }

    /// The channel every gate subscribes to for invalidations.
    pub fn events_channel(&self) -> String {
        self.key("events", "")
    }

    /// The Redis key prefix of this store.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// When Redis may drop a record: `store.retention` after it was revoked
    /// or after it expires, whichever comes first. `None`: keep it.
    fn expire_at(&self, record: &TokenRecord) -> Option<u64> {
        let retention = jiff::SignedDuration::try_from(self.inner.retention).ok()?;
        let after = |t: Timestamp| t.checked_add(retention).ok();
        let at = match (
            record.revoked_at.and_then(after),
            record.expires_at.and_then(after),
        ) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        u64::try_from(at.as_millisecond()).ok()
    }

    fn event(hash: &TokenHash) -> String {
        format!(r#"{{"op":"invalidate","hash":"{}"}}"#, hash.to_hex())
    }
}

/// `SET key value [PXAT ms]`.
fn set_cmd(key: &str, value: &[u8], expire_at: Option<u64>, nx: bool) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ms) = expire_at {
        cmd.arg("PXAT").arg(ms);
    }
    if nx {
        cmd.arg("NX");
    }
    cmd
}

impl TokenStore for RedisStore {
    async fn get(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        let key = self.token_key(hash);
        self.timed(|mut conn| async move {
            let mut get = redis::cmd("GET");
            get.arg(&key);
            let raw: Option<Vec<u8>> = match get.query_async(&mut conn).await {
                // The connection was found closed (a restart, `CLIENT
                // KILL`): one more try on the reconnected one, within the
                // same bound. A read, so a retry is harmless.
                Err(e) if e.is_connection_dropped() => {
                    get.query_async(&mut conn).await.map_err(redis_err)?
                }
                other => other.map_err(redis_err)?,
            };
            raw.map(|raw| TokenRecord::from_json(&raw).map_err(StoreError::Corrupt))
                .transpose()
        })
        .await
    }

    async fn find(&self, id: &TokenId) -> Result<Option<Stored>, StoreError> {
        let id_key = self.id_key(id.as_str());
        self.timed(|mut conn| async move {
            let hex: Option<String> = redis::cmd("GET")
                .arg(&id_key)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let Some(hex) = hex else { return Ok(None) };
            let hash = TokenHash::from_hex(&hex)
                .ok_or_else(|| StoreError::Corrupt(format!("{id_key} holds no hash")))?;
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.token_key(&hash))
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let Some(raw) = raw else { return Ok(None) };
            let record = TokenRecord::from_json(&raw).map_err(StoreError::Corrupt)?;
            Ok(Some(Stored { hash, record, raw }))
        })
        .await
    }

    async fn create(&self, hash: &TokenHash, record: &TokenRecord) -> Result<(), StoreError> {
        let expire_at = self.expire_at(record);
        let id_key = self.id_key(record.id.as_str());
        let token_key = self.token_key(hash);
        self.timed(|mut conn| async move {
            // The id first: once the token key exists the token works, and
            // by then the admin API can already find it by id.
            let claimed: Option<String> =
                set_cmd(&id_key, hash.to_hex().as_bytes(), expire_at, true)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
            if claimed.is_none() {
                return Err(StoreError::Conflict);
            }
            let stored: Option<String> = set_cmd(&token_key, &record.to_json(), expire_at, true)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if stored.is_none() {
                let _: Value = redis::cmd("DEL")
                    .arg(&id_key)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
                return Err(StoreError::Conflict);
            }
            let score = created_ms(record);
            let zadd = |index: String| {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(index).arg(score).arg(record.id.as_str());
                cmd
            };
            let _: Vec<Value> = conn
                .each(vec![
                    zadd(self.index_key(Some(&record.workspace_id))),
                    zadd(self.index_key(None)),
                ])
                .await?;
            // A gate may hold a negative entry for this hash.
            self.publish(&mut conn, hash).await?;
            self.replicated(&mut conn).await
        })
        .await
    }

    async fn replace(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        self.write(current, new, true).await
    }

    /// The same record again (a compare-and-set, so a newer change is never
    /// overwritten), its event, and with `replica_acks` the wait: a retry
    /// of a change whose first try timed out after Redis took it (so its
    /// event was never sent) now tells the gates, and the replicas hold it.
    async fn confirm(&self, current: &Stored) -> Result<(), StoreError> {
        self.write(current, &current.record, true).await.map(drop)
    }

    async fn touch(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        self.write(current, new, false).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        let index = self.index_key(query.workspace.as_deref());
        let index = index.as_str();
        paginate(&query, SCAN_BATCH, |after| async move {
            self.scan_batch(index, after.as_ref()).await
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(|mut conn| async move {
            let _: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            Ok(())
        })
        .await
    }
}

impl RedisStore {
    /// Compare-and-set of one record; `notify` publishes the invalidation.
    async fn write(
        &self,
        current: &Stored,
        new: &TokenRecord,
        notify: bool,
    ) -> Result<bool, StoreError> {
        let expire_at = self.expire_at(new);

        let token_key = self.token_key(&current.hash);
        let id_key = self.id_key(new.id.as_str());
        let new_raw = new.to_json();
        self.timed(|mut conn| async move {
            let swapped: i64 = self
                .inner
                .compare_and_set
                .key(&token_key)
                .arg(&current.raw[..])
                .arg(&new_raw[..])
                .arg(expire_at.unwrap_or(0))
                .invoke_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if swapped == 0 {
                return Ok(false);
            }
            if let Some(ms) = expire_at {
                let _: Value = redis::cmd("PEXPIREAT")
                    .arg(&id_key)
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
            }
            if notify {
                self.publish(&mut conn, &current.hash).await?;
                self.replicated(&mut conn).await?;
            }
            Ok(true)
        })
        .await
    }

    /// Up to [`SCAN_BATCH`] index entries older than `after`, newest first,
    /// each with its record. Entries whose record Redis has dropped
    /// (retention) are removed from the index on the way.
    async fn scan_batch(&self, index: &str, after: Option<&Cursor>) -> Result<Batch, StoreError> {
        self.timed(|mut conn| async move {
            // Sorted-set order is (score, member); newest first is the reverse.
            // Entries tied with the cursor's score are filtered here, reading
            // further while a whole batch was tied.
            let max = after.map_or_else(|| "+inf".to_owned(), |c| c.created_ms.to_string());
            let mut entries: Vec<(String, u64)> = Vec::with_capacity(SCAN_BATCH);
            let mut offset = 0;
            loop {
                let raw: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                    .arg(index)
                    .arg(&max)
                    .arg("-inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(SCAN_BATCH)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
                let full = raw.len() == SCAN_BATCH;
                offset += raw.len();
                entries.extend(
                    raw.into_iter()
                        .map(|(id, score)| (id, score as u64))
                        .filter(|(id, ms)| match after {
                            Some(c) => *ms < c.created_ms || id.as_str() < c.id.as_str(),
                            None => true,
                        }),
                );
                if entries.len() >= SCAN_BATCH || !full {
                    break;
                }
            }
            entries.truncate(SCAN_BATCH);
            if entries.is_empty() {
                return Ok(Vec::new());
            }

            let get = |key: String| {
                let mut cmd = redis::cmd("GET");
                cmd.arg(key);
                cmd
            };
            let hashes: Vec<Option<String>> = conn
                .each(entries.iter().map(|(id, _)| get(self.id_key(id))).collect())
                .await?;
            let raws: Vec<Option<Vec<u8>>> = conn
                .each(
                    hashes
                        .iter()
                        // An empty key name holds nothing; keeps positions aligned.
                        .map(|hex| get(self.key("token:", hex.as_deref().unwrap_or(""))))
                        .collect(),
                )
                .await?;

            let mut out = Vec::with_capacity(entries.len());
            let mut stale = Vec::new();
            for ((id, ms), raw) in entries.into_iter().zip(raws) {
                let record = match raw {
                    Some(raw) => Some(TokenRecord::from_json(&raw).map_err(StoreError::Corrupt)?),
                    None => {
                        stale.push(id.clone());
                        None
                    }
                };
                let id = TokenId::parse(&id).map_err(|_| {
                    StoreError::Corrupt(format!("index {index} holds a bad token id {id:?}"))
                })?;
                out.push((Cursor { created_ms: ms, id }, record));
            }
            if !stale.is_empty() {
                let _: Value = redis::cmd("ZREM")
                    .arg(index)
                    .arg(&stale)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
            }
            Ok(out)
        })
        .await
    }
}

// === the invalidation subscription ===

/// A subscription to the events channel on this store's topology (RESP3:
/// messages and connection events arrive as pushes on the sender given to
/// [`RedisStore::subscriber`]). The cache's listener drives it: it calls
/// [`Subscriber::subscribe`] until that succeeds, again after every
/// `Disconnection` push, and [`Subscriber::check`] now and then.
pub struct Subscriber {
    kind: SubscriberKind,
    channel: String,
    timeout: Duration,
    push: tokio::sync::mpsc::UnboundedSender<PushInfo>,
}

enum SubscriberKind {
    /// Resubscribes by itself after a reconnect.
    Single {
        client: Client,
        conn: Option<ConnectionManager>,
    },
    /// A plain connection to the master of the moment: after a fail-over
    /// the listener subscribes again on the new master.
    Sentinel {
        sentinel: SentinelClient,
        store: Arc<SentinelTarget>,
        master: Option<String>,
        conn: Option<MultiplexedConnection>,
        /// Bumped per connection; pushes of replaced ones are dropped (a
        /// dropped connection's disconnection must not look like ours).
        generation: Arc<AtomicU64>,
    },
    /// Sharded pub/sub; the cluster connection moves the subscription to
    /// the shard's new master after a fail-over.
    Cluster {
        nodes: Vec<String>,
        conn: Option<ClusterConnection>,
        /// As for Sentinel: pushes of a dropped connection are ignored.
        generation: Arc<AtomicU64>,
    },
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// A client for one server; with `ca`, a `rediss://` server's certificate
/// must chain to it (the system's CAs otherwise).
fn standalone_client(
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

fn resp3(url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    let info = url.into_connection_info()?;
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Ok(info.set_redis_settings(redis))
}

impl RedisStore {
    /// A subscriber to this store's events channel (not yet subscribed).
    pub fn subscriber(
        &self,
        push: tokio::sync::mpsc::UnboundedSender<PushInfo>,
    ) -> Result<Subscriber, StoreError> {
        let invalid =
            |e: redis::RedisError| StoreError::Unavailable(format!("invalid redis URL: {e}"));
        let kind = match (&self.inner.topology, &self.inner.target) {
            (Topology::Standalone { url, ca }, _) => SubscriberKind::Single {
                client: standalone_client(resp3(url).map_err(invalid)?, ca.as_deref())
                    .map_err(invalid)?,
                conn: None,
            },
            (
                Topology::Sentinel {
                    sentinels,
                    master_name,
                    username,
                    password,
                    ..
                },
                Target::Sentinel(store),
            ) => SubscriberKind::Sentinel {
                sentinel: sentinel_client(
                    sentinels,
                    master_name,
                    username.as_deref(),
                    password.as_deref(),
                    ProtocolVersion::RESP3,
                )
                .map_err(invalid)?,
                store: store.clone(),
                master: None,
                conn: None,
                generation: Arc::new(AtomicU64::new(0)),
            },
            (Topology::Sentinel { .. }, _) => {
                return Err(StoreError::Unavailable("sentinel target missing".into()));
            }
            (Topology::Cluster { nodes }, _) => SubscriberKind::Cluster {
                nodes: nodes.clone(),
                conn: None,
                generation: Arc::new(AtomicU64::new(0)),
            },
        };
        Ok(Subscriber {
            kind,
            channel: self.events_channel(),
            timeout: self.inner.timeout,
            push,
        })
    }
}

impl Subscriber {
    /// The channel followed.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// (Re)subscribes; `Ok` once Redis confirmed. Not bounded here: the
    /// caller puts a deadline on it.
    pub async fn subscribe(&mut self) -> Result<(), StoreError> {
        let timeout = self.timeout;
        match &mut self.kind {
            SubscriberKind::Single { client, conn } => {
                if conn.is_none() {
                    let config = manager_config(timeout)
                        .set_push_sender(self.push.clone())
                        .set_automatic_resubscription();
                    *conn = Some(
                        ConnectionManager::new_with_config(client.clone(), config)
                            .await
                            .map_err(redis_err)?,
                    );
                }
                if let Some(c) = conn {
                    c.subscribe(&self.channel).await.map_err(redis_err)?;
                }
                Ok(())
            }
            SubscriberKind::Sentinel {
                sentinel,
                store,
                master,
                conn,
                generation,
            } => {
                // Always a fresh connection to the master of the moment.
                let mine = generation.fetch_add(1, Ordering::AcqRel) + 1;
                *conn = None;
                let client = sentinel.async_get_client().await.map_err(redis_err)?;
                let addr = client.get_connection_info().addr().to_string();
                let push = self.push.clone();
                let current = generation.clone();
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_push_sender(move |info: PushInfo| {
                        if current.load(Ordering::Acquire) == mine {
                            push.send(info).map_err(|_| redis::aio::SendError)
                        } else {
                            Ok(())
                        }
                    });
                let mut c = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(redis_err)?;
                c.subscribe(&self.channel).await.map_err(redis_err)?;
                store.forget_unless(&addr);
                *master = Some(addr);
                *conn = Some(c);
                Ok(())
            }
            SubscriberKind::Cluster {
                nodes,
                conn,
                generation,
            } => {
                if conn.is_none() {
                    let mut infos = Vec::with_capacity(nodes.len());
                    for n in nodes.iter() {
                        infos.push(resp3(n).map_err(redis_err)?);
                    }
                    let mine = generation.fetch_add(1, Ordering::AcqRel) + 1;
                    let push = self.push.clone();
                    let current = generation.clone();
                    let client = ClusterClientBuilder::new(infos)
                        .use_protocol(ProtocolVersion::RESP3)
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        .push_sender(move |info: PushInfo| {
                            if current.load(Ordering::Acquire) == mine {
                                push.send(info).map_err(|_| redis::aio::SendError)
                            } else {
                                Ok(())
                            }
                        })
                        .build()
                        .map_err(redis_err)?;
                    *conn = Some(client.get_async_connection().await.map_err(redis_err)?);
                }
                if let Some(c) = conn {
                    // A keyed read in the channel's slot first: after a
                    // fail-over the slot map may still name the old master,
                    // now a replica, which would accept the subscription
                    // but never see the new master's messages; the read
                    // gets MOVED and refreshes the map.
                    let _: Value = redis::cmd("EXISTS")
                        .arg(&self.channel)
                        .query_async(c)
                        .await
                        .map_err(redis_err)?;
                    c.ssubscribe(&self.channel).await.map_err(redis_err)?;
                }
                Ok(())
            }
        }
    }

    /// Publishes `payload` on the channel from the subscriber's own
    /// connection (the listener checks that it comes back: proof that the
    /// subscription is on a server that sees the channel's messages).
    pub async fn probe(&mut self, payload: &str) -> Result<(), StoreError> {
        let verb = match self.kind {
            SubscriberKind::Cluster { .. } => "SPUBLISH",
            _ => "PUBLISH",
        };
        let mut cmd = redis::cmd(verb);
        cmd.arg(&self.channel).arg(payload);
        let result: redis::RedisResult<Value> = match &mut self.kind {
            SubscriberKind::Single { conn: Some(c), .. } => cmd.query_async(c).await,
            SubscriberKind::Sentinel { conn: Some(c), .. } => cmd.query_async(c).await,
            SubscriberKind::Cluster { conn: Some(c), .. } => {
                // Routed as other gates route their events: with a slot map
                // refreshed by a keyed read (see `subscribe`), or a replica
                // holding a stale subscription would echo the probe back.
                let _: Value = redis::cmd("EXISTS")
                    .arg(&self.channel)
                    .query_async(c)
                    .await
                    .map_err(redis_err)?;
                cmd.query_async(c).await
            }
            _ => return Err(StoreError::Unavailable("not subscribed".into())),
        };
        result.map(|_| ()).map_err(redis_err)
    }

    /// Drops the connection (Sentinel, Cluster), so that the next
    /// [`Subscriber::subscribe`] starts from a fresh view of the topology.
    pub fn reset(&mut self) {
        match &mut self.kind {
            SubscriberKind::Single { .. } => {}
            SubscriberKind::Sentinel {
                conn, generation, ..
            } => {
                generation.fetch_add(1, Ordering::AcqRel);
                *conn = None;
            }
            SubscriberKind::Cluster {
                conn, generation, ..
            } => {
                generation.fetch_add(1, Ordering::AcqRel);
                *conn = None;
            }
        }
    }

    /// Whether the subscription is still where it should be. With Sentinel
    /// this asks where the master is: after a fail-over the old master may
    /// keep the connection open as a replica, so no disconnection tells.
    /// `false`: subscribe again (and drop the cache). Other topologies: no
    /// I/O, always `true`.
    pub async fn check(&mut self) -> bool {
        let SubscriberKind::Sentinel {
            sentinel,
            store,
            master,
            conn,
            ..
        } = &mut self.kind
        else {
            return true;
        };
        let Some(current) = master.clone() else {
            return true;
        };
        match tokio::time::timeout(self.timeout * 4, sentinel.async_get_client()).await {
            Ok(Ok(client)) => {
                let addr = client.get_connection_info().addr().to_string();
                if addr == current {
                    return true;
                }
                tracing::warn!(from = %current, to = %addr, "redis master moved (sentinel)");
                store.forget_unless(&addr);
                *master = None;
                *conn = None;
                false
            }
            // The sentinels do not answer: nothing known to have moved.
            _ => true,
        }
    }
}
