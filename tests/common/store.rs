//! The token store reached behind the gates' backs: seeding tokens and
//! changes that publish no event (a lost invalidation). Never goes through
//! a gate.

use std::time::Duration;

use hawzu_gate::token::record::RECORD_VERSION;
use hawzu_gate::token::{Scope, TokenId, TokenRecord};
use jiff::Timestamp;

use super::eventually;

/// Deletes token `id`'s `id:` key under `prefix` in the shared Redis, as an
/// eviction or a fail-over that lost it would.
pub async fn lose_id_key(prefix: &str, id: &str) {
    let mut redis = redis::Client::open(super::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}id:{id}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(deleted, 1, "the id key of {id} was there");
}

/// The Redis key of `secret`'s record under `prefix` (docs/design.md §
/// Stores: `token:{hash-hex}`).
pub fn token_key(prefix: &str, secret: &str) -> String {
    let hash = hawzu_gate::token::TokenSecret::parse(secret)
        .unwrap()
        .hash();
    format!("{prefix}token:{}", hash.to_hex())
}

/// Marks `secret`'s record disabled straight in Redis, publishing nothing:
/// a change whose invalidation was lost. Only a distrusted cache (read
/// again after a resubscription) or the cache lifetime makes a gate see it.
pub async fn disable_in_redis_silently(url: &str, prefix: &str, secret: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = token_key(prefix, secret);
    let json: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["disabled_at"] = serde_json::json!(jiff::Timestamp::now().to_string());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(v.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
}

// === steady load against the forward-auth door, judged by a change log ===

/// Where a test's Redis is, for [`TestStore`].
pub fn standalone(url: &str) -> hawzu_gate::store::redis::Topology {
    hawzu_gate::store::redis::Topology::Standalone {
        url: url.to_owned(),
        ca: None,
    }
}

/// The token store a test's gates use, reached directly (no gate, no
/// request-path timeout): set-up that must not fail because a busy machine
/// is slow, and changes made behind the gates' backs.
#[derive(Clone)]
pub struct TestStore {
    store: hawzu_gate::store::RedisStore,
}

impl TestStore {
    pub fn new(topology: hawzu_gate::store::redis::Topology, prefix: &str) -> Self {
        let store = hawzu_gate::store::RedisStore::with_topology(
            topology,
            hawzu_gate::store::redis::RedisOptions {
                url: String::new(),
                key_prefix: prefix.to_owned(),
                // Set-up, not the request path: a busy machine may be slow.
                timeout: Duration::from_secs(10),
                retention: Duration::from_secs(3600),
            },
        )
        .unwrap();
        Self { store }
    }

    /// `n` valid workspace tokens (viewer of `ws_1`, no expiry), written
    /// straight into the store as the admin API would: their secrets and ids.
    pub async fn seed(&self, n: usize) -> Vec<(String, String)> {
        use hawzu_gate::store::TokenStore;
        use hawzu_gate::token::TokenSecret;
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = self.store.clone();
            let count = n / 8 + usize::from(t < n % 8);
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(count);
                for _ in 0..count {
                    let secret = TokenSecret::generate().unwrap();
                    let record = workspace_record("seeded");
                    let id = record.id.as_str().to_owned();
                    store.create(&secret.hash(), &record).await.unwrap();
                    out.push((secret.expose().to_owned(), id));
                }
                out
            }));
        }
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.extend(t.await.unwrap());
        }
        out
    }

    /// Whether token `id`'s record in the store is neither disabled nor
    /// revoked (tries again while a connection is being re-made).
    pub async fn is_valid(&self, id: &str) -> bool {
        use hawzu_gate::store::TokenStore;
        let id = hawzu_gate::token::TokenId::parse(id).unwrap();
        eventually("a read of the store", Duration::from_secs(10), || async {
            let stored = self.store.find(&id).await.ok()?.unwrap();
            Some(stored.record.disabled_at.is_none() && stored.record.revoked_at.is_none())
        })
        .await
    }

    /// Marks token `id` disabled in the store and publishes its
    /// invalidation: the change as another gate's admin call makes it.
    pub async fn disable(&self, id: &str) {
        self.disable_with(id, true).await;
    }

    /// Marks token `id` disabled in the store without publishing an event:
    /// a change whose invalidation was lost (only a distrusted cache, or
    /// the cache lifetime, makes a gate see it).
    pub async fn disable_silently(&self, id: &str) {
        self.disable_with(id, false).await;
    }

    async fn disable_with(&self, id: &str, publish: bool) {
        use hawzu_gate::store::TokenStore;
        let id = hawzu_gate::token::TokenId::parse(id).unwrap();
        // Tries again while the connection is being re-made (a test may
        // have just cut every client's connection).
        eventually("a disable", Duration::from_secs(10), || async {
            let current = self.store.find(&id).await.ok()?.unwrap();
            let mut next = current.record.clone();
            next.disabled_at = Some(jiff::Timestamp::now());
            // `touch` is the quiet write (for last_used_at): no event.
            let written = if publish {
                self.store.replace(&current, &next).await
            } else {
                self.store.touch(&current, &next).await
            };
            written.ok().filter(|w| *w)
        })
        .await;
    }
}

/// A live workspace token's record (`workspace_viewer` on `ws_1`, never
/// expires), named `name`, with a fresh id: for tests that write records
/// straight into a store.
pub fn workspace_record(name: &str) -> hawzu_gate::token::TokenRecord {
    use hawzu_gate::token::record::RECORD_VERSION;
    use hawzu_gate::token::{Scope, TokenId, TokenRecord};
    TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().unwrap(),
        name: name.into(),
        workspace_id: "ws_1".into(),
        scope: Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        created_by: "test".into(),
        created_at: jiff::Timestamp::now(),
        expires_at: None,
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotated_from: None,
        description: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    }
}

/// A live workspace token record in `ws`, made by `tests` at `created_at`,
/// never expiring, nothing else set: for tests that write the store
/// directly.
pub fn record(ws: &str, created_at: Timestamp) -> TokenRecord {
    TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().unwrap(),
        name: "CI Runner".into(),
        workspace_id: ws.into(),
        scope: Scope::Workspace {
            role: "workspace_member".into(),
        },
        created_by: "tests".into(),
        created_at,
        expires_at: None,
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotated_from: None,
        description: None,
        rotated_to: None,
        allow_from: Vec::new(),
        not_before: None,
        limits_by: None,
    }
}
