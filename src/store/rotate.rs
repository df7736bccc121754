//! [`rotate`]: the two writes of a rotate — the successor's record and the
//! old token's, rotated to it — made so that a failure between them never
//! leaves a token working that someone revoked.

use std::sync::{Mutex, PoisonError};

use thiserror::Error;

use super::{StoreError, Stored, TokenStore, UpdateError, update};
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
    /// The successor as stored.
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
/// (revoked: it never works). The old token is then rotated by
/// compare-and-set, `plan` judging the record written over; one that
/// changed since the successor was planned from it in a way the
/// successor would copy (its networks narrowed, its expiry shortened, a
/// rename) is [`RotateError::Changed`]. Nothing is ever undone on the old
/// token: a revocation made meanwhile — which finds the token revoked by
/// the rotate and writes nothing — always stays.
///
/// A compare-and-set reported failed may have landed (a timeout after
/// Redis took it): the old token is read again, and if it names this
/// successor the rotate took place — confirmed once more, so that other
/// gates are told and replicas hold it — and is answered as such.
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
        // A conflict is another token's hash or id: not ours to withdraw.
        if !matches!(e, StoreError::Conflict) {
            withdraw(store, successor_hash, &successor).await;
        }
        return Err(e.into());
    }
    // The record the last run judged: the one written over.
    let before: Mutex<Option<TokenRecord>> = Mutex::new(None);
    let written = update(store, id, |r| {
        let p = plan(r).map_err(Step::Refused)?;
        if p.successor != successor {
            return Err(Step::Changed);
        }
        *before.lock().unwrap_or_else(PoisonError::into_inner) = Some(r.clone());
        Ok(Some(p.old))
    })
    .await;
    let before = before.into_inner().unwrap_or_else(PoisonError::into_inner);
    let failed = match written {
        Ok(old) => {
            return Ok(Rotated {
                before: before.unwrap_or_else(|| found.record.clone()),
                old,
                successor,
            });
        }
        Err(UpdateError::Store(e)) => match landed(store, id, &successor).await {
            Some(old) => {
                return Ok(Rotated {
                    before: before.unwrap_or_else(|| found.record.clone()),
                    old,
                    successor,
                });
            }
            None => RotateError::Store(e),
        },
        Err(UpdateError::NotFound) => RotateError::NotFound,
        Err(UpdateError::Refused(Step::Refused(e))) => RotateError::Refused(e),
        Err(UpdateError::Refused(Step::Changed)) => RotateError::Changed,
    };
    withdraw(store, successor_hash, &successor).await;
    Err(failed)
}

/// The old token `id`, if the compare-and-set reported failed in fact
/// rotated it to `successor` (its id is new: no other write names it),
/// confirmed again: the event other gates may have missed is sent, and
/// replicas asked for are waited on.
async fn landed<S: TokenStore>(store: &S, id: &TokenId, successor: &TokenRecord) -> Option<Stored> {
    let old = store.find(id).await.ok()??;
    if old.record.rotated_to.as_ref() != Some(&successor.id) {
        return None;
    }
    match store.confirm(&old).await {
        // Changed since: a later write, which told the gates itself.
        Ok(_) => {}
        Err(e) => tracing::warn!(
            token_id = %id,
            rotated_to = %successor.id,
            error = %e,
            "a rotate whose write was reported failed had rotated the token; confirming it failed: other gates learn of it by their cache's lifetime, and a fail-over may lose it"
        ),
    }
    Some(old)
}

/// How many times [`withdraw`] reads again a successor that changed
/// under it (nothing writes one nobody holds, but a confirm may).
const WITHDRAW_TRIES: usize = 3;

/// Removes `successor`, stored for a rotate that did not take place:
/// nobody was given its secret, so it leaves no trace in the lists. A
/// failure is logged: the record then stays, usable only with a secret
/// nobody holds.
async fn withdraw<S: TokenStore>(store: &S, hash: &TokenHash, successor: &TokenRecord) {
    let mut outcome = Ok(false);
    for _ in 0..WITHDRAW_TRIES {
        outcome = match store.get_stored(hash).await {
            // Never stored, or not ours.
            Ok(None) => return,
            Ok(Some(s)) if s.record.id != successor.id => return,
            Ok(Some(s)) => store.remove(&s).await,
            Err(e) => Err(e),
        };
        if !matches!(outcome, Ok(false)) {
            break;
        }
    }
    match outcome {
        Ok(true) => tracing::info!(
            token_id = %successor.id,
            rotated_from = ?successor.rotated_from.as_ref().map(TokenId::as_str),
            "the successor of a rotate that did not take place was removed; nobody was given its secret"
        ),
        Ok(false) => tracing::error!(
            token_id = %successor.id,
            "the successor of a rotate that did not take place kept changing and was not removed: nobody was given its secret; revoke it by id"
        ),
        Err(e) => tracing::error!(
            token_id = %successor.id,
            error = %e,
            "the successor of a rotate that did not take place could not be removed: nobody was given its secret; revoke it by id"
        ),
    }
}
