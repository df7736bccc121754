//! [`rotate`]: the two writes of a rotate — the successor's record and the
//! old token's, rotated to it — made so that a failure between them never
//! leaves a token working that someone revoked.

use std::sync::{Mutex, PoisonError};

use thiserror::Error;

use super::{StoreError, Stored, TokenStore, UNROTATED, UpdateError, update, withdraw};
use crate::token::{TokenHash, TokenId, TokenRecord};

/// What a rotate writes, computed from the old token's record as found.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    /// The old token as the rotate leaves it (`rotated_to` the successor).
    pub old: TokenRecord,
    /// The successor, stored under the new secret's hash.
    pub successor: TokenRecord,
}

/// A rotate that took place.
#[derive(Debug)]
pub struct Rotated {
    /// The old token as the rotate found it (the record written over).
    pub before: TokenRecord,
    /// The old token as stored now.
    pub old: Stored,
    /// The successor as stored once the old token named it: revoked if
    /// someone revoked it by id between the two writes (it is listed from
    /// the first), whose walk back along `rotated_from` then found the old
    /// token not yet naming it — the caller ends the old value's overlap.
    pub successor: TokenRecord,
}

/// Why [`rotate`] rotated nothing.
#[derive(Debug, Error)]
pub enum RotateError<E> {
    #[error("no token with this id")]
    NotFound,
    #[error(transparent)]
    Refused(E),
    #[error("the token changed while it was rotated")]
    Changed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a run of the old token's compare-and-set refused.
enum Step<E> {
    Refused(E),
    Changed,
}

/// Rotates token `id`: `plan` judges its record and says what to write.
///
/// The successor is written first. Until the old token names it, nobody
/// holds its secret and nothing refers to it, so a failure from there on
/// leaves the old token as it was and only withdraws the successor
/// (removed). The old token is then rotated by compare-and-set, `plan`
/// judging the record written over; one that changed since the successor
/// was planned from it in a way the successor would copy (any field it
/// copies: networks, expiry, name, description…) is
/// [`RotateError::Changed`]. Nothing is ever undone on the old token: a
/// revocation made meanwhile — which finds the token revoked by the
/// rotate and writes nothing — always stays.
///
/// A compare-and-set may land and be reported otherwise: a timeout after
/// Redis took it, or a cluster client that sent it again after a
/// dropped connection (the second try finds the record changed). A run
/// that finds the old token naming this successor takes it as done, and
/// a store error reads the old token again: naming the successor, the
/// rotate took place — confirmed once more, so that other gates are told
/// and replicas hold it — and is answered as such; unreadable, the
/// successor is left (nobody holds its secret) rather than removed from
/// under an old token that may name it.
pub async fn rotate<S, E>(
    store: &S,
    id: &TokenId,
    successor_hash: &TokenHash,
    plan: impl Fn(&TokenRecord) -> Result<Rotation, E>,
) -> Result<Rotated, RotateError<E>>
where
    S: TokenStore,
{
    let found = store.find(id).await?.ok_or(RotateError::NotFound)?;
    let successor = plan(&found.record).map_err(RotateError::Refused)?.successor;
    if let Err(e) = store.create(successor_hash, &successor).await {
        // Stored in part, or whole with its answer lost: the hash and id
        // are fresh, so whatever is under them is this rotate's.
        withdraw(store, successor_hash, &successor, UNROTATED).await;
        return Err(e.into());
    }
    // The record the run that wrote judged: the one written over.
    let before: Mutex<Option<TokenRecord>> = Mutex::new(None);
    let written = update(store, id, |r| {
        // Rotated by this very rotate (its write landed, then was reported
        // otherwise): confirmed, not judged again.
        if r.rotated_to.as_ref() == Some(&successor.id) {
            return Ok(None);
        }
        let p = plan(r).map_err(Step::Refused)?;
        if p.successor != successor {
            return Err(Step::Changed);
        }
        *before.lock().unwrap_or_else(PoisonError::into_inner) = Some(r.clone());
        Ok(Some(p.old))
    })
    .await;
    let before = before
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .unwrap_or_else(|| found.record.clone());
    let failed = match written {
        Ok(old) => {
            return Ok(Rotated {
                before,
                old,
                successor: as_stored(store, successor_hash, successor).await,
            });
        }
        Err(UpdateError::Store(e)) => match landed(store, id, &successor).await {
            Landed::Yes(old) => {
                return Ok(Rotated {
                    before,
                    old: *old,
                    successor: as_stored(store, successor_hash, successor).await,
                });
            }
            Landed::No => RotateError::Store(e),
            Landed::Unknown => {
                tracing::warn!(
                    token_id = %id,
                    rotated_to = %successor.id,
                    error = %e,
                    "a rotate whose write failed could not read the old token back; its successor is left (nobody was given its secret)"
                );
                return Err(RotateError::Store(e));
            }
        },
        // A later run found the token changed (not by this rotate: it
        // would name the successor) or gone.
        Err(UpdateError::NotFound) => RotateError::NotFound,
        Err(UpdateError::Refused(Step::Refused(e))) => RotateError::Refused(e),
        Err(UpdateError::Refused(Step::Changed)) => RotateError::Changed,
    };
    withdraw(store, successor_hash, &successor, UNROTATED).await;
    Err(failed)
}

/// The successor of a rotate that took place, read again: changed only
/// if someone changed it by id meanwhile. Unreadable (twice), as planned,
/// and said: a revoke of it meanwhile would not have ended the old value's
/// overlap.
async fn as_stored<S: TokenStore>(
    store: &S,
    hash: &TokenHash,
    planned: TokenRecord,
) -> TokenRecord {
    let mut read = store.get(hash).await;
    if read.is_err() {
        read = store.get(hash).await;
    }
    match read {
        Ok(Some(stored)) if stored.id == planned.id => stored,
        Ok(_) => planned,
        Err(e) => {
            tracing::warn!(
                token_id = %planned.id,
                rotated_from = ?planned.rotated_from.as_ref().map(TokenId::as_str),
                error = %e,
                "a rotated token's successor could not be read back: if it was revoked meanwhile, revoke the old token too (DELETE) to end its overlap"
            );
            planned
        }
    }
}

/// Whether a compare-and-set reported failed rotated the old token.
enum Landed {
    Yes(Box<Stored>),
    No,
    /// The old token could not be read.
    Unknown,
}

/// How many times [`landed`] reads the old token, and confirms it.
const READ_BACK_TRIES: usize = 2;

/// Whether the old token `id` names `successor` (its id is new: no other
/// write names it) — then confirmed again: the event other gates may have
/// missed is sent, and replicas asked for are waited on. A confirm that
/// keeps failing is logged, and the rotate still answered as done: its
/// successor's secret must reach the caller.
async fn landed<S: TokenStore>(store: &S, id: &TokenId, successor: &TokenRecord) -> Landed {
    let mut read = Err(StoreError::Unavailable("not read".into()));
    for _ in 0..READ_BACK_TRIES {
        read = store.find(id).await;
        if read.is_ok() {
            break;
        }
    }
    let old = match read {
        Ok(Some(old)) if old.record.rotated_to.as_ref() == Some(&successor.id) => old,
        Ok(_) => return Landed::No,
        Err(_) => return Landed::Unknown,
    };
    let mut confirmed = Err(StoreError::Unavailable("not confirmed".into()));
    for _ in 0..READ_BACK_TRIES {
        // `Ok(false)`: changed since, by a later write that told the
        // gates itself.
        confirmed = store.confirm(&old).await;
        if confirmed.is_ok() {
            break;
        }
    }
    if let Err(e) = confirmed {
        tracing::warn!(
            token_id = %id,
            rotated_to = %successor.id,
            error = %e,
            "a rotate whose write was reported failed had rotated the token, and confirming it failed: answered as done (the successor's secret must reach the caller); other gates learn of it within their cache's lifetime, and a fail-over before a replica has it would bring the old token back"
        );
    }
    Landed::Yes(Box::new(old))
}
