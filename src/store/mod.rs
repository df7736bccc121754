//! Token stores: one contract, two backends.
//!
//! [`TokenStore`] is what the decision path and the admin API need from
//! storage; [`ChangeFeed`] (`feed`) is how a store tells caches what
//! changed, and that they may have missed changes; `list` pages listings
//! for both backends. `embedded` keeps tokens in a file under `data_dir`
//! for a single gate; `redis` shares them across a fleet and publishes an
//! invalidation event on every change. Every call is bounded in time; none
//! blocks the async runtime. The store holds records keyed by the token
//! hash, never a secret. It must never know about the cache, the decision
//! or HTTP. [`AuditLog`] (`audit`) is its sibling: the audit log's events,
//! kept by the same two backends; [`Outbox`] (`outbox`) reads that log
//! for webhooks (a subscription per webhook, notices written once).

use std::future::Future;

use thiserror::Error;

use crate::token::{TokenHash, TokenId, TokenRecord};

mod audit;
mod chores;
pub mod embedded;
mod embedded_outbox;
mod embedded_usage;
mod feed;
mod list;
mod outbox;
mod overlaps;
pub mod redis;
mod rotate;
pub mod usage;

pub use self::audit::AuditLog;
pub use self::chores::{ChoreHold, Chores, leave_chores};
pub use self::embedded::EmbeddedStore;
pub use self::feed::{Change, ChangeFeed, Changes};
pub(crate) use self::list::paginate;
pub use self::list::{
    Cursor, DEFAULT_PAGE, ListFilter, ListQuery, MAX_PAGE, Page, created_ms, unused_since,
};
pub use self::outbox::{Outbox, Taken};
pub use self::overlaps::{CHAIN_LIMIT, Cut, EndedOverlap, Walk, end_overlaps};
pub use self::redis::RedisStore;
pub use self::rotate::{RotateError, Rotated, Rotation, rotate};
pub use self::usage::UsageStore;

/// The store's own faults. A missing token is not an error (`Ok(None)`).
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("the token store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the token store is unavailable: {0}")]
    Unavailable(String),
    #[error("a stored record could not be read: {0}")]
    Corrupt(String),
    #[error("a token with this id or hash already exists")]
    Conflict,
    /// A change written on the Sentinel master that fewer replicas than
    /// required confirmed in time (`store.redis.sentinel.replica_acks`).
    #[error(
        "the change reached the master, but {acked} of {wanted} replicas confirmed it within {within:?}: a fail-over could lose it"
    )]
    Unconfirmed {
        acked: i64,
        wanted: u32,
        within: std::time::Duration,
    },
}

impl StoreError {
    /// What a caller of the gate may be told: a timeout or an unconfirmed
    /// change says what happened; anything else is the store's own text (a
    /// Redis message, an address, a key, a path), which stays in the log.
    pub fn public(&self) -> String {
        match self {
            StoreError::Timeout(_) | StoreError::Unconfirmed { .. } | StoreError::Conflict => {
                self.to_string()
            }
            StoreError::Unavailable(_) | StoreError::Corrupt(_) => {
                "it failed (the gate's log has its error)".to_owned()
            }
        }
    }
}

/// A record as read, with the hash it is stored under and its stored bytes
/// (the compare-and-set witness for [`TokenStore::replace`]).
#[derive(Debug, Clone)]
pub struct Stored {
    pub hash: TokenHash,
    pub record: TokenRecord,
    pub(crate) raw: Vec<u8>,
}

/// What the gate needs from token storage. Both backends pass the same
/// suite (`tests/store_suite.rs`).
pub trait TokenStore: Send + Sync + 'static {
    /// The record stored under `hash`, revoked and expired ones included.
    fn get(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    /// The record with public id `id`, with its hash.
    fn find(&self, id: &TokenId)
    -> impl Future<Output = Result<Option<Stored>, StoreError>> + Send;

    /// The record stored under `hash` as [`TokenStore::find`] hands it
    /// back — with the bytes read, the compare-and-set's witness: found by
    /// the secret, whatever became of its id's index.
    fn get_stored(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<Option<Stored>, StoreError>> + Send;

    /// Stores a new record; [`StoreError::Conflict`] if the id or hash exists.
    fn create(
        &self,
        hash: &TokenHash,
        record: &TokenRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces `current` by `new` if the stored record is still `current`.
    /// `Ok(false)` means someone changed it since it was read.
    fn replace(
        &self,
        current: &Stored,
        new: &TokenRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// As [`TokenStore::replace`], for a change no decision depends on
    /// (`last_used_at`): other gates are not told, so their caches stay warm.
    fn touch(
        &self,
        current: &Stored,
        new: &TokenRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.replace(current, new)
    }

    /// Makes sure the state in `current`, which an admin call found
    /// already as asked (an idempotent disable, enable or revoke), is held
    /// by the store and as safe as a fresh write. `false`: the store no
    /// longer holds `current` (changed since it was read, or read from a
    /// Sentinel master that has since been replaced and never passed it
    /// on), and the caller reads again. A store that acknowledges writes
    /// only once replicas have them (Redis Sentinel, `replica_acks`)
    /// writes it again and waits, so a retry after a lost write does not
    /// answer 200 for a change a fail-over undid. By default a
    /// compare-and-set of the same record.
    fn confirm(&self, current: &Stored) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.replace(current, &current.record)
    }

    /// Deletes `current` — its record, its id key and its index entries —
    /// if the stored record is still `current` (`Ok(false)`: changed since
    /// it was read, or gone). Only for a record nobody was given the
    /// secret of ([`withdraw`]n): a token anyone holds
    /// is revoked, never removed, so that its refusal says why.
    fn remove(&self, current: &Stored) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A page of tokens, newest first.
    fn list(&self, query: ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Checks that the store answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How many times [`withdraw`] reads again a record that changed under it
/// (nothing writes one nobody holds, but a confirm may).
const WITHDRAW_TRIES: usize = 3;

/// What [`withdraw`] removes, as its log says: a rotate's successor…
const UNROTATED: &str = "the successor of a rotate that did not take place";
/// …or a created token whose answer (its secret) never reached the caller.
const UNCREATED: &str = "a token whose creation was answered as failed";

/// Removes `record`, stored under `hash` for a caller that was never given
/// its secret (`what` it is: [`UNROTATED`], [`UNCREATED`]), so it leaves no
/// trace in the lists. A failure is logged: the record then stays, usable
/// only with a secret nobody holds.
async fn withdraw<S: TokenStore>(store: &S, hash: &TokenHash, record: &TokenRecord, what: &str) {
    let mut outcome = Ok(false);
    for _ in 0..WITHDRAW_TRIES {
        outcome = match store.get_stored(hash).await {
            // Never stored, or not this one.
            Ok(None) => return,
            Ok(Some(s)) if s.record.id != record.id => return,
            Ok(Some(s)) => store.remove(&s).await,
            Err(e) => Err(e),
        };
        if !matches!(outcome, Ok(false)) {
            break;
        }
    }
    match outcome {
        Ok(true) => tracing::info!(
            token_id = %record.id,
            rotated_from = ?record.rotated_from.as_ref().map(TokenId::as_str),
            "{what} was removed; nobody was given its secret"
        ),
        Ok(false) => tracing::error!(
            token_id = %record.id,
            "{what} kept changing and was not removed: nobody was given its secret; revoke it by id (`token show` finds it)"
        ),
        Err(e) => tracing::error!(
            token_id = %record.id,
            error = %e,
            "{what} could not be removed, or only in part: nobody was given its secret; if `token show` still finds it by id, revoke it"
        ),
    }
}

/// How many times a read-modify-write retries after a concurrent change.
const UPDATE_RETRIES: usize = 8;

/// Why [`update`] did not change a record.
#[derive(Debug, Error)]
pub enum UpdateError<E> {
    #[error("no token with this id")]
    NotFound,
    #[error(transparent)]
    Refused(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the token `id`, lets `change` compute the new record (or refuse, or
/// return `None` when nothing needs to change) and writes it with
/// compare-and-set, retrying when another writer got there first.
pub async fn update<S, E>(
    store: &S,
    id: &TokenId,
    change: impl Fn(&TokenRecord) -> Result<Option<TokenRecord>, E>,
) -> Result<Stored, UpdateError<E>>
where
    S: TokenStore,
{
    update_with(store, Key::Id(id), change, false).await
}

/// As [`update`], for the token whose secret hashes to `hash`: a leak
/// report knows the secret, and must revoke it even if the id's index was
/// lost (a Redis eviction or fail-over); the write makes the index again.
pub async fn update_by_hash<S, E>(
    store: &S,
    hash: &TokenHash,
    change: impl Fn(&TokenRecord) -> Result<Option<TokenRecord>, E>,
) -> Result<Stored, UpdateError<E>>
where
    S: TokenStore,
{
    update_with(store, Key::Hash(hash), change, false).await
}

/// What [`update_with`] reads the record by.
#[derive(Clone, Copy)]
enum Key<'a> {
    Id(&'a TokenId),
    Hash(&'a TokenHash),
}

impl Key<'_> {
    async fn read<S: TokenStore>(self, store: &S) -> Result<Option<Stored>, StoreError> {
        match self {
            Key::Id(id) => store.find(id).await,
            Key::Hash(hash) => store.get_stored(hash).await,
        }
    }
}

/// As [`update_by_hash`], written with [`TokenStore::touch`]: for
/// `last_used_at`. By the hash: a token whose `id:` key Redis lost still
/// authorizes by its secret, and its use makes the key again.
pub async fn touch_update<S, E>(
    store: &S,
    hash: &TokenHash,
    change: impl Fn(&TokenRecord) -> Result<Option<TokenRecord>, E>,
) -> Result<Stored, UpdateError<E>>
where
    S: TokenStore,
{
    update_with(store, Key::Hash(hash), change, true).await
}

async fn update_with<S, E>(
    store: &S,
    key: Key<'_>,
    change: impl Fn(&TokenRecord) -> Result<Option<TokenRecord>, E>,
    quiet: bool,
) -> Result<Stored, UpdateError<E>>
where
    S: TokenStore,
{
    for _ in 0..UPDATE_RETRIES {
        let current = key.read(store).await?.ok_or(UpdateError::NotFound)?;
        let Some(new) = change(&current.record).map_err(UpdateError::Refused)? else {
            if quiet || store.confirm(&current).await? {
                return Ok(current);
            }
            // Not held any more: read again.
            continue;
        };
        let written = if quiet {
            store.touch(&current, &new).await?
        } else {
            store.replace(&current, &new).await?
        };
        if written {
            let raw = new.to_json();
            return Ok(Stored {
                hash: current.hash,
                record: new,
                raw,
            });
        }
    }
    Err(UpdateError::Store(StoreError::Unavailable(
        "the record kept changing under concurrent updates; try again".into(),
    )))
}

/// The backend chosen by `store.backend`, as one type.
#[derive(Debug, Clone)]
pub enum Store {
    Embedded(EmbeddedStore),
    Redis(RedisStore),
}

impl TokenStore for Store {
    async fn get(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        match self {
            Store::Embedded(s) => s.get(hash).await,
            Store::Redis(s) => s.get(hash).await,
        }
    }

    async fn get_stored(&self, hash: &TokenHash) -> Result<Option<Stored>, StoreError> {
        match self {
            Store::Embedded(s) => s.get_stored(hash).await,
            Store::Redis(s) => s.get_stored(hash).await,
        }
    }

    async fn find(&self, id: &TokenId) -> Result<Option<Stored>, StoreError> {
        match self {
            Store::Embedded(s) => s.find(id).await,
            Store::Redis(s) => s.find(id).await,
        }
    }

    async fn create(&self, hash: &TokenHash, record: &TokenRecord) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.create(hash, record).await,
            Store::Redis(s) => s.create(hash, record).await,
        }
    }

    async fn replace(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        match self {
            Store::Embedded(s) => s.replace(current, new).await,
            Store::Redis(s) => s.replace(current, new).await,
        }
    }

    async fn touch(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        match self {
            Store::Embedded(s) => s.touch(current, new).await,
            Store::Redis(s) => s.touch(current, new).await,
        }
    }

    async fn confirm(&self, current: &Stored) -> Result<bool, StoreError> {
        match self {
            Store::Embedded(s) => s.confirm(current).await,
            Store::Redis(s) => s.confirm(current).await,
        }
    }

    async fn remove(&self, current: &Stored) -> Result<bool, StoreError> {
        match self {
            Store::Embedded(s) => s.remove(current).await,
            Store::Redis(s) => s.remove(current).await,
        }
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        match self {
            Store::Embedded(s) => s.list(query).await,
            Store::Redis(s) => s.list(query).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.ping().await,
            Store::Redis(s) => s.ping().await,
        }
    }
}

impl ChangeFeed for Store {
    async fn publish(&self, hash: &TokenHash) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.publish(hash).await,
            Store::Redis(s) => s.publish(hash).await,
        }
    }

    fn changes(&self) -> Result<Changes, StoreError> {
        match self {
            Store::Embedded(s) => s.changes(),
            Store::Redis(s) => s.changes(),
        }
    }
}
