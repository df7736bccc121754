//! Opening the token store, the cache in front of it, and the cache's
//! invalidation listener, with their start-up log lines. Owns the mapping
//! from `[store]`/`[cache]` settings to the store and cache types; it must
//! never bind a socket or serve a request.

use std::sync::Arc;

use crate::admin;
use crate::cache::{CacheOptions, TokenCache, listen_for_invalidations};
use crate::config::{Backend, Loaded, RedisMode};
use crate::metrics::Metrics;
use crate::store::redis::{RedisOptions, Topology};
use crate::store::{EmbeddedStore, RedisStore, Store, StoreError, TokenStore};

use super::error::StartError;

/// The store chosen by `store.backend`.
pub async fn open_store(loaded: &Loaded) -> Result<Store, StartError> {
    let s = &loaded.settings;
    Ok(match s.store.backend {
        Backend::Embedded => {
            admin::create_data_dir(&s.data_dir)?;
            Store::Embedded(
                EmbeddedStore::open(&s.data_dir, s.store.timeout.0)
                    .await?
                    .with_audit_max_events(s.audit.max_events),
            )
        }
        Backend::Redis => {
            let r = &s.store.redis;
            let topology = match r.mode {
                RedisMode::Standalone => Topology::Standalone {
                    url: r.url.clone(),
                    ca: r
                        .ca_file
                        .as_ref()
                        .map(|p| {
                            std::fs::read(p).map(Arc::from).map_err(|e| {
                                StoreError::Unavailable(format!(
                                    "store.redis.ca_file {}: {e}",
                                    p.display()
                                ))
                            })
                        })
                        .transpose()?,
                },
                RedisMode::Sentinel => Topology::Sentinel {
                    sentinels: r.nodes.clone(),
                    master_name: r.sentinel.master_name.clone(),
                    username: r.sentinel.username.clone(),
                    password: r.sentinel.password.clone(),
                    replica_acks: r
                        .sentinel
                        .replica_acks
                        .unwrap_or(crate::config::DEFAULT_REPLICA_ACKS),
                },
                RedisMode::Cluster => Topology::Cluster {
                    nodes: r.nodes.clone(),
                    replica_acks: r.cluster.replica_acks,
                },
            };
            Store::Redis(
                RedisStore::with_topology(
                    topology,
                    RedisOptions {
                        url: r.url.clone(),
                        key_prefix: r.key_prefix.clone(),
                        timeout: s.store.timeout.0,
                        retention: s.store.retention.0,
                    },
                )?
                .with_audit_max_events(s.audit.max_events),
            )
        }
    })
}

/// Opens the store and starts the cache in front of it (counting into
/// `metrics`), logs whether the store is reachable, and starts the cache's
/// invalidation listener when the store has one. Returns the cache and the
/// background tasks to abort at shutdown.
pub(super) async fn start_store(
    loaded: &Loaded,
    metrics: &Arc<Metrics>,
) -> Result<(Arc<TokenCache<Store>>, Vec<tokio::task::JoinHandle<()>>), StartError> {
    let s = &loaded.settings;
    let store = open_store(loaded).await?;
    let cache = Arc::new(TokenCache::with_metrics(
        store.clone(),
        CacheOptions {
            ttl: s.cache.ttl.0,
            negative_ttl: s.cache.negative_ttl.0,
            max_entries: s.cache.max_entries,
            stale_if_error: s.cache.stale_if_error.0,
        },
        metrics.clone(),
    ));
    let mut background = Vec::new();
    match &store {
        Store::Embedded(e) => {
            tracing::info!(backend = "embedded", path = %e.path().display(), "token store open");
            // Every write goes through the cache, but one that lands after
            // its caller's timeout lands past it: the store's own feed
            // tells the cache then.
            background.push(tokio::spawn(listen_for_invalidations(
                cache.clone(),
                e.clone(),
            )));
        }
        Store::Redis(r) => {
            let topology = format!("{:?}", r.topology());
            match r.ping().await {
                Ok(()) => {
                    tracing::info!(backend = "redis", %topology, prefix = r.key_prefix(), "token store reachable");
                    warn_if_evicting(r).await;
                }
                Err(e) => {
                    tracing::warn!(backend = "redis", %topology, error = %e, "token store not reachable yet; uncached tokens get store_unavailable until it is")
                }
            }
            background.push(tokio::spawn(listen_for_invalidations(
                cache.clone(),
                r.clone(),
            )));
            background.push(tokio::spawn(index_audit_log(r.clone())));
        }
    }
    Ok((cache, background))
}

/// Every 10 minutes (and at start), one gate of the fleet at a time:
/// indexes by workspace the audit events written without the index (all
/// of them the first time; then those of gates from before it, during a
/// rolling upgrade) and drops from every workspace's index what the
/// stream has trimmed. Tries again after 30 s while the store does not
/// answer.
async fn index_audit_log(r: RedisStore) {
    let every = std::time::Duration::from_secs(600);
    loop {
        let wait = match r.index_audit_log(every).await {
            Ok(Some(looked)) => {
                tracing::debug!(events = looked, "audit log indexed by workspace");
                every
            }
            Ok(None) => every,
            Err(e) => {
                tracing::warn!(error = %e, "audit log not indexed by workspace; a tenant's audit pages miss the events of gates from before the index until it is");
                std::time::Duration::from_secs(30)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Logs a warning when Redis may evict keys under memory pressure: an
/// evicted record makes its token unknown (refused), but an evicted `id:`
/// key leaves a live token that cannot be found by id until its next
/// change (the leak report, which holds the secret, still revokes it).
async fn warn_if_evicting(r: &RedisStore) {
    match r.eviction_policy().await {
        Ok(Some(policy)) if policy != "noeviction" => tracing::warn!(
            maxmemory_policy = %policy,
            "Redis may evict token records under memory pressure: an evicted token is refused as unknown, an evicted id index hides a live token from the admin API until its next change, and the audit log and usage lose entries; set maxmemory-policy noeviction (docs/operations.md)"
        ),
        Ok(_) => {}
        // A managed Redis may not answer INFO: nothing to say.
        Err(e) => tracing::debug!(error = %e, "could not read Redis's maxmemory-policy"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use jiff::Timestamp;

    use super::*;
    use crate::config;
    use crate::token::{Scope, TokenRecord, TokenSecret};

    /// On the embedded store too, a change written past the cache — a
    /// revoke that landed after its caller's timeout, which the retry only
    /// confirms — reaches the cache: the listener follows the store's own
    /// change feed, as it follows Redis pub/sub.
    #[tokio::test]
    async fn a_change_written_past_the_cache_reaches_it_on_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gate.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &file,
            format!("data_dir = {:?}\n", data.display().to_string()),
        )
        .unwrap();
        let loaded = config::load(Some(&file)).unwrap();
        let (cache, background) = start_store(&loaded, &Arc::new(Metrics::new()))
            .await
            .unwrap();
        let secret = TokenSecret::generate().unwrap();
        let record = TokenRecord::sample(
            Scope::Workspace {
                role: "workspace_member".into(),
            },
            Timestamp::now(),
        );
        cache.create(&secret.hash(), &record).await.unwrap();
        let live = cache.lookup(&secret.hash()).await.unwrap().unwrap();
        assert!(live.revoked_at().is_none());

        let current = cache.store().find(&record.id).await.unwrap().unwrap();
        let revoked = TokenRecord {
            revoked_at: Some(Timestamp::now()),
            revoked_by: Some("admin".into()),
            ..record.clone()
        };
        assert!(cache.store().replace(&current, &revoked).await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let seen = cache.lookup(&secret.hash()).await.unwrap().unwrap();
            if seen.revoked_at().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the cache kept the live record");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for task in background {
            task.abort();
        }
    }
}
