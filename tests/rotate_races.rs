//! A rotate is two writes — the successor's record and the old token's,
//! rotated to it — and either may fail, or land and then be reported
//! failed (a timeout after Redis took it). These tests put a real store
//! (the embedded file store, and Redis under a unique prefix) behind a
//! wrapper that fails one write on cue and lets another writer change the
//! old token at that moment, as a `DELETE` or a leak report on another
//! gate would. What must hold: a revocation is never undone, the rotate's
//! answer says what happened, and a successor whose secret nobody was
//! given never works.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::Mutex;
use std::time::Duration;

use hawzu_gate::store::{
    EmbeddedStore, ListFilter, ListQuery, Page, RedisStore, RotateError, Rotation, StoreError,
    Stored, TokenStore, redis::RedisOptions, rotate, update,
};
use hawzu_gate::token::{TokenHash, TokenId, TokenRecord, TokenSecret};
use jiff::Timestamp;

use common::{redis_url, unique_prefix};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Which of the rotate's writes fails, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Nothing fails.
    Nothing,
    /// The successor's record is not stored.
    CreateFails,
    /// The old token's compare-and-set is not written.
    ReplaceFails,
    /// The old token's compare-and-set is written, then reported as a
    /// timeout (Redis took it; its answer came too late).
    ReplaceLandsThenTimesOut,
    /// The old token's compare-and-set is written, then sent again (a
    /// cluster client's retry after a dropped connection): the second try
    /// finds the record changed.
    ReplaceLandsThenSentAgain,
    /// As `ReplaceLandsThenTimesOut`, and the old token cannot be read
    /// back afterwards.
    ReplaceLandsThenUnreadable,
}

/// What another writer does to the old token: at the fault's moment, or
/// (no fault) just after the successor is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Meanwhile {
    Nothing,
    /// An admin `DELETE` (or a leak report): revoked now, or found revoked
    /// already and left so.
    Revoke,
    /// A `PATCH` of its allowed networks, narrowed.
    Narrow,
    /// An admin `DELETE` of the successor (listed once stored), before
    /// the old token names it.
    RevokeSuccessor,
}

/// A real store that fails the first write of `fault`'s kind and lets
/// `meanwhile` change the old token once, straight in the store.
struct Interfering<S> {
    inner: S,
    fault: Fault,
    meanwhile: Meanwhile,
    old: TokenId,
    /// Whether the fault and the other writer are still to come.
    fault_due: Mutex<bool>,
    meanwhile_due: Mutex<bool>,
}

impl<S: TokenStore> Interfering<S> {
    fn new(inner: S, fault: Fault, meanwhile: Meanwhile, old: TokenId) -> Self {
        Self {
            inner,
            fault,
            meanwhile,
            old,
            fault_due: Mutex::new(fault != Fault::Nothing),
            meanwhile_due: Mutex::new(meanwhile != Meanwhile::Nothing),
        }
    }

    /// True once, for the first write of one of `kinds`, if it is the
    /// fault's.
    fn fault_now(&self, kinds: &[Fault]) -> bool {
        let mut due = self.fault_due.lock().unwrap();
        let now = *due && kinds.contains(&self.fault);
        if now {
            *due = false;
        }
        now
    }

    /// The other writer's change, once; `created` the successor's id, when
    /// it is stored.
    async fn meanwhile(&self, created: Option<&TokenId>) {
        let due = std::mem::replace(&mut *self.meanwhile_due.lock().unwrap(), false);
        if !due {
            return;
        }
        let now = Timestamp::now();
        if self.meanwhile == Meanwhile::RevokeSuccessor {
            let successor = created.expect("the successor is stored");
            let revoke = |r: &TokenRecord| {
                Ok::<_, ()>(Some(TokenRecord {
                    revoked_at: Some(now),
                    revoked_by: Some("someone".into()),
                    ..r.clone()
                }))
            };
            update(&self.inner, successor, revoke).await.unwrap();
            return;
        }
        let change = |r: &TokenRecord| match self.meanwhile {
            Meanwhile::Nothing | Meanwhile::RevokeSuccessor => None,
            // Found revoked already: nothing to write (`admin::tokens`).
            Meanwhile::Revoke if r.is_revoked_at(now) => None,
            Meanwhile::Revoke => Some(TokenRecord {
                revoked_at: Some(now),
                revoked_by: Some("someone".into()),
                ..r.clone()
            }),
            Meanwhile::Narrow => Some(TokenRecord {
                allow_from: vec!["10.0.0.0/8".parse().unwrap()],
                ..r.clone()
            }),
        };
        update(&self.inner, &self.old, |r| Ok::<_, ()>(change(r)))
            .await
            .unwrap();
    }
}

fn injected() -> StoreError {
    StoreError::Unavailable("injected by the test".into())
}

impl<S: TokenStore> TokenStore for Interfering<S> {
    async fn get(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.get(hash).await
    }

    async fn find(&self, id: &TokenId) -> Result<Option<Stored>, StoreError> {
        if self.fault == Fault::ReplaceLandsThenUnreadable && !*self.fault_due.lock().unwrap() {
            return Err(injected());
        }
        self.inner.find(id).await
    }

    async fn get_stored(&self, hash: &TokenHash) -> Result<Option<Stored>, StoreError> {
        self.inner.get_stored(hash).await
    }

    async fn create(&self, hash: &TokenHash, record: &TokenRecord) -> Result<(), StoreError> {
        if self.fault_now(&[Fault::CreateFails]) {
            self.meanwhile(None).await;
            return Err(injected());
        }
        self.inner.create(hash, record).await?;
        if self.fault == Fault::Nothing {
            self.meanwhile(Some(&record.id)).await;
        }
        Ok(())
    }

    async fn replace(&self, current: &Stored, new: &TokenRecord) -> Result<bool, StoreError> {
        let landing = [
            Fault::ReplaceLandsThenTimesOut,
            Fault::ReplaceLandsThenSentAgain,
            Fault::ReplaceLandsThenUnreadable,
        ];
        if self.fault_now(&[Fault::ReplaceFails]) {
            self.meanwhile(None).await;
            return Err(injected());
        }
        if self.fault_now(&landing) {
            let written = self.inner.replace(current, new).await?;
            assert!(written, "the rotate's write was meant to land");
            self.meanwhile(None).await;
            if self.fault == Fault::ReplaceLandsThenSentAgain {
                // The same write again: the record is no longer `current`.
                return self.inner.replace(current, new).await;
            }
            return Err(StoreError::Timeout(TIMEOUT));
        }
        self.inner.replace(current, new).await
    }

    async fn confirm(&self, current: &Stored) -> Result<bool, StoreError> {
        self.inner.confirm(current).await
    }

    async fn remove(&self, current: &Stored) -> Result<bool, StoreError> {
        self.inner.remove(current).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        self.inner.list(query).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// A rotate without overlap, as the admin API plans one: refused once
/// the old token is revoked; the old value revoked at once; the successor
/// a copy under a new id.
fn plan(
    new_id: &TokenId,
    now: Timestamp,
) -> impl Fn(&TokenRecord) -> Result<Rotation, &'static str> + '_ {
    move |r| {
        if r.is_revoked_at(now) {
            return Err("token_revoked");
        }
        Ok(Rotation {
            old: TokenRecord {
                revoked_at: Some(now),
                revoked_by: Some("rotator".into()),
                rotated_to: Some(new_id.clone()),
                ..r.clone()
            },
            successor: TokenRecord {
                id: new_id.clone(),
                created_by: "rotator".into(),
                created_at: now,
                last_used_at: None,
                rotated_from: Some(r.id.clone()),
                ..r.clone()
            },
        })
    }
}

/// What a scenario left behind.
struct Outcome {
    result: Result<(), RotateError<&'static str>>,
    /// The successor as the rotate reported it.
    reported: Option<TokenRecord>,
    old: TokenRecord,
    /// The successor's record, if one is stored.
    successor: Option<TokenRecord>,
    /// Whether the successor can be found by its id, or is listed.
    successor_found: bool,
    now: Timestamp,
}

impl Outcome {
    /// Withdrawn: no trace of the successor (nobody was given its secret).
    fn withdrawn(&self) -> bool {
        self.successor.is_none() && !self.successor_found
    }
}

async fn scenario<S: TokenStore>(inner: S, fault: Fault, meanwhile: Meanwhile) -> Outcome {
    let now = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
    let old = common::record("ws_rotate", now);
    inner
        .create(&TokenSecret::generate().unwrap().hash(), &old)
        .await
        .unwrap();
    let store = Interfering::new(inner, fault, meanwhile, old.id.clone());
    let new_id = TokenId::generate().unwrap();
    let new_hash = TokenSecret::generate().unwrap().hash();
    let rotated = rotate(&store, &old.id, &new_hash, plan(&new_id, now)).await;
    let reported = rotated.as_ref().ok().map(|r| r.successor.clone());
    let result = rotated.map(|_| ());
    let listed = store
        .inner
        .list(ListQuery {
            workspace: Some(old.workspace_id.clone()),
            cursor: None,
            limit: 100,
            filter: ListFilter::all(Timestamp::now()),
        })
        .await
        .unwrap();
    Outcome {
        result,
        reported,
        old: store.inner.find(&old.id).await.unwrap().unwrap().record,
        successor: store.inner.get(&new_hash).await.unwrap(),
        successor_found: store.inner.find(&new_id).await.unwrap().is_some()
            || listed.tokens.iter().any(|t| t.id == new_id),
        now,
    }
}

/// The successor works: stored, not revoked.
fn works(successor: &Option<TokenRecord>, now: Timestamp) -> bool {
    successor.as_ref().is_some_and(|s| !s.is_revoked_at(now))
}

async fn a_revocation_while_the_successor_fails_is_never_undone<S: TokenStore>(s: S) {
    let o = scenario(s, Fault::CreateFails, Meanwhile::Revoke).await;
    assert!(
        matches!(o.result, Err(RotateError::Store(_))),
        "{:?}",
        o.result
    );
    assert!(
        o.old.is_revoked_at(o.now),
        "the revoked token works again: {:?}",
        o.old
    );
    assert!(o.withdrawn(), "{:?}", o.successor);
}

async fn a_revocation_while_a_landed_write_times_out_is_never_undone<S: TokenStore>(s: S) {
    let o = scenario(s, Fault::ReplaceLandsThenTimesOut, Meanwhile::Revoke).await;
    assert!(
        o.old.is_revoked_at(o.now),
        "the revoked token works again: {:?}",
        o.old
    );
    // The rotation took place: the caller is given the successor.
    assert!(o.result.is_ok(), "{:?}", o.result);
    assert!(works(&o.successor, o.now), "{:?}", o.successor);
    assert_eq!(o.old.rotated_to, o.successor.map(|s| s.id));
}

async fn a_write_that_failed_leaves_the_old_token_and_withdraws_the_successor<S: TokenStore>(s: S) {
    let o = scenario(s, Fault::ReplaceFails, Meanwhile::Nothing).await;
    assert!(
        matches!(o.result, Err(RotateError::Store(_))),
        "{:?}",
        o.result
    );
    assert_eq!((o.old.revoked_at, o.old.rotated_to.clone()), (None, None));
    // Nobody was given its secret: it is gone.
    assert!(o.withdrawn(), "{:?}", o.successor);
}

async fn a_token_revoked_between_the_writes_is_refused_and_the_successor_withdrawn<
    S: TokenStore,
>(
    s: S,
) {
    let o = scenario(s, Fault::Nothing, Meanwhile::Revoke).await;
    assert!(
        matches!(o.result, Err(RotateError::Refused("token_revoked"))),
        "{:?}",
        o.result
    );
    assert!(o.old.is_revoked_at(o.now));
    assert_eq!(o.old.rotated_to, None);
    assert!(o.withdrawn(), "{:?}", o.successor);
}

async fn a_token_narrowed_between_the_writes_is_not_rotated_into_its_old_networks<S: TokenStore>(
    s: S,
) {
    // The successor was planned from the wider record: rotating now would
    // hand out a value usable from networks the old one no longer is.
    let o = scenario(s, Fault::Nothing, Meanwhile::Narrow).await;
    assert!(
        matches!(o.result, Err(RotateError::Changed)),
        "{:?}",
        o.result
    );
    assert_eq!((o.old.revoked_at, o.old.rotated_to.clone()), (None, None));
    assert_eq!(o.old.allow_from.len(), 1);
    assert!(o.withdrawn(), "{:?}", o.successor);
}

async fn a_write_that_landed_and_was_sent_again_is_the_rotate_done<S: TokenStore>(s: S) {
    // The second try finds the token rotated — by this rotate: before, it
    // was refused as `token_revoked` and the successor the old token now
    // names was removed, leaving nobody a working value.
    let o = scenario(s, Fault::ReplaceLandsThenSentAgain, Meanwhile::Nothing).await;
    assert!(o.result.is_ok(), "{:?}", o.result);
    assert!(o.old.is_revoked_at(o.now));
    assert!(works(&o.successor, o.now), "{:?}", o.successor);
    assert_eq!(o.old.rotated_to, o.successor.map(|s| s.id));
}

async fn a_write_in_doubt_that_cannot_be_read_back_leaves_the_successor<S: TokenStore>(s: S) {
    // Unknown whether the old token names it: removing it could leave the
    // old token rotated to nothing; left, it is a record nobody holds.
    let o = scenario(s, Fault::ReplaceLandsThenUnreadable, Meanwhile::Nothing).await;
    assert!(
        matches!(o.result, Err(RotateError::Store(_))),
        "{:?}",
        o.result
    );
    assert!(works(&o.successor, o.now), "{:?}", o.successor);
    assert_eq!(o.old.rotated_to, o.successor.map(|s| s.id));
}

/// A successor revoked by id between the two writes is reported as
/// stored, revoked: the revoke's walk back found the old token not yet
/// naming it, so the caller (`admin::change::rotate`) ends the old value's
/// overlap.
async fn a_successor_revoked_between_the_writes_is_reported_revoked<S: TokenStore>(s: S) {
    let o = scenario(s, Fault::Nothing, Meanwhile::RevokeSuccessor).await;
    assert!(o.result.is_ok(), "{:?}", o.result);
    let reported = o.reported.expect("a rotate that took place");
    assert!(
        reported.revoked_at.is_some(),
        "reported as planned, not as stored: {reported:?}"
    );
    assert_eq!(Some(&reported), o.successor.as_ref());
}

async fn a_rotate_writes_both_records<S: TokenStore>(s: S) {
    let o = scenario(s, Fault::Nothing, Meanwhile::Nothing).await;
    assert!(o.result.is_ok(), "{:?}", o.result);
    assert!(o.old.is_revoked_at(o.now));
    assert!(works(&o.successor, o.now), "{:?}", o.successor);
    assert!(o.successor_found);
    assert_eq!(o.old.rotated_to, o.successor.map(|s| s.id));
}

async fn embedded() -> (EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (EmbeddedStore::open(dir.path(), TIMEOUT).await.unwrap(), dir)
}

fn redis_store(test: &str) -> RedisStore {
    RedisStore::new(RedisOptions {
        url: redis_url(),
        key_prefix: unique_prefix(test),
        timeout: TIMEOUT,
        retention: Duration::from_secs(30 * 24 * 3600),
    })
    .unwrap()
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded_store {
            $(
                #[tokio::test]
                async fn $name() {
                    let (s, _dir) = super::embedded().await;
                    super::$name(s).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::redis_store(stringify!($name))).await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_revocation_while_the_successor_fails_is_never_undone,
    a_revocation_while_a_landed_write_times_out_is_never_undone,
    a_write_that_failed_leaves_the_old_token_and_withdraws_the_successor,
    a_token_revoked_between_the_writes_is_refused_and_the_successor_withdrawn,
    a_token_narrowed_between_the_writes_is_not_rotated_into_its_old_networks,
    a_write_that_landed_and_was_sent_again_is_the_rotate_done,
    a_write_in_doubt_that_cannot_be_read_back_leaves_the_successor,
    a_successor_revoked_between_the_writes_is_reported_revoked,
    a_rotate_writes_both_records,
);
