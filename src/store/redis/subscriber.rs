//! The subscription to the events channel, one per topology: a
//! `ConnectionManager` that resubscribes by itself (standalone), a plain
//! connection to the master of the moment (Sentinel), sharded pub/sub on
//! the cluster connection (Cluster).
//!
//! It connects, subscribes, probes and checks where it is told to; when
//! to do which, and what a lost subscription means, is `events`' job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, Value};

use super::connect::{
    SentinelTarget, Target, Topology, cluster_builder, manager_config, resp3, sentinel_client,
    standalone_client,
};
use super::{RedisStore, redis_err};
use crate::store::StoreError;

/// A subscription to the events channel on this store's topology (RESP3:
/// messages and connection events arrive as pushes on the sender given to
/// [`RedisStore::subscriber`]). The cache's listener drives it: it calls
/// [`Subscriber::subscribe`] until that succeeds, again after every
/// `Disconnection` push, and [`Subscriber::check`] now and then.
pub struct Subscriber {
    kind: SubscriberKind,
    channel: String,
    /// This gate's own channel for its probes (see
    /// [`super::keys::probe_channel`]; `None` only for a channel name no
    /// such channel can share a slot with).
    probe_channel: Option<String>,
    /// Whether the last subscription took the probe channel: a Redis user
    /// not allowed it probes on the events channel, every gate receiving
    /// every one (tried again at every subscription: an ACL may change).
    own_probes: bool,
    /// Whether that refusal was told (once per process).
    told: bool,
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
            (Topology::Cluster { nodes, .. }, _) => SubscriberKind::Cluster {
                nodes: nodes.clone(),
                conn: None,
                generation: Arc::new(AtomicU64::new(0)),
            },
        };
        let channel = self.events_channel();
        Ok(Subscriber {
            kind,
            probe_channel: super::keys::probe_channel(&channel, &super::keys::nonce()),
            own_probes: false,
            told: false,
            channel,
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

    /// The channel probes go on: this gate's own, or the events channel.
    fn probe_target(&self) -> &str {
        match &self.probe_channel {
            Some(own) if self.own_probes => own,
            _ => &self.channel,
        }
    }

    /// (Re)subscribes to the events channel and this gate's probe channel,
    /// in one command (the two are in one slot: on a Cluster they cannot
    /// land on two nodes, so the probe's echo speaks for the events);
    /// `Ok` once Redis confirmed. A user refused the probe channel
    /// subscribes to the events channel alone and probes there. Not
    /// bounded here: the caller puts a deadline on it.
    pub async fn subscribe(&mut self) -> Result<(), StoreError> {
        let events = vec![self.channel.clone()];
        let Some(own) = self.probe_channel.clone() else {
            return self.subscribe_to(&events).await.map_err(redis_err);
        };
        match self.subscribe_to(&[self.channel.clone(), own]).await {
            Ok(()) => {
                self.own_probes = true;
                Ok(())
            }
            Err(e) if e.code() == Some("NOPERM") => {
                self.refused_own_probes();
                self.subscribe_to(&events).await.map_err(redis_err)
            }
            Err(e) => Err(redis_err(e)),
        }
    }

    /// The Redis user may not use this gate's probe channel: probes go on
    /// the events channel (told once).
    fn refused_own_probes(&mut self) {
        self.own_probes = false;
        if !self.told {
            self.told = true;
            tracing::warn!(
                "invalidation listener: the Redis user may not use this gate's probe channel; probing on the events channel instead, where every gate receives every gate's probe (allow the gate's Redis user the channels `&{}:probe:*`, or `&<prefix>*`, and restart or wait for the next resubscription)",
                self.channel,
            );
        }
    }

    async fn subscribe_to(&mut self, channels: &[String]) -> Result<(), redis::RedisError> {
        let timeout = self.timeout;
        match &mut self.kind {
            SubscriberKind::Single { client, conn } => {
                if conn.is_none() {
                    let config = manager_config(timeout)
                        .set_push_sender(self.push.clone())
                        .set_automatic_resubscription();
                    *conn = Some(ConnectionManager::new_with_config(client.clone(), config).await?);
                }
                if let Some(c) = conn {
                    c.subscribe(channels).await?;
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
                let client = sentinel.async_get_client().await?;
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
                    .await?;
                c.subscribe(channels).await?;
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
                        infos.push(resp3(n)?);
                    }
                    let mine = generation.fetch_add(1, Ordering::AcqRel) + 1;
                    let push = self.push.clone();
                    let current = generation.clone();
                    let client = cluster_builder(ClusterClientBuilder::new(infos), timeout)
                        .use_protocol(ProtocolVersion::RESP3)
                        .push_sender(move |info: PushInfo| {
                            if current.load(Ordering::Acquire) == mine {
                                push.send(info).map_err(|_| redis::aio::SendError)
                            } else {
                                Ok(())
                            }
                        })
                        .build()?;
                    *conn = Some(client.get_async_connection().await?);
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
                        .await?;
                    c.ssubscribe(channels).await?;
                }
                Ok(())
            }
        }
    }

    /// Publishes `payload` on this gate's probe channel from the
    /// subscriber's own connection (the listener checks that it comes
    /// back: proof that the subscription is on a server that sees the
    /// events channel's messages — the probe channel is in its slot).
    pub async fn probe(&mut self, payload: &str) -> Result<(), StoreError> {
        let verb = match self.kind {
            SubscriberKind::Cluster { .. } => "SPUBLISH",
            _ => "PUBLISH",
        };
        let mut cmd = redis::cmd(verb);
        cmd.arg(self.probe_target()).arg(payload);
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
        match result {
            Ok(_) => Ok(()),
            // Subscribing allowed, publishing not (an ACL selector): the
            // next attempt probes on the events channel, and so do all
            // after it (a subscription would be taken again every time).
            Err(e) if e.code() == Some("NOPERM") && self.own_probes => {
                self.refused_own_probes();
                self.probe_channel = None;
                Err(redis_err(e))
            }
            Err(e) => Err(redis_err(e)),
        }
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
