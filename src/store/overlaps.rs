//! [`end_overlaps`]: a revoked value takes with it every value its chain of
//! rotations replaced whose overlap still runs — whoever holds one value of
//! a chain may hold them all.
//!
//! A token rotated again while the value before it still works (a daily
//! rotation with a week's overlap) has several values working at once;
//! ending only the one a revoked value replaced would leave the older ones
//! working for the rest of their overlaps.

use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;

use super::{StoreError, Stored, TokenStore, UpdateError, update};
use crate::token::{TokenId, TokenRecord, overlap_ended};

/// How many values back [`end_overlaps`] follows a chain: far more than
/// `store.retention` keeps of any chain rotated at a sane rate (every
/// value is dropped `store.retention` after its revocation).
pub const CHAIN_LIMIT: usize = 1000;

/// A value whose overlap [`end_overlaps`] ended.
#[derive(Debug)]
pub struct EndedOverlap {
    /// As it was found.
    pub before: TokenRecord,
    /// As stored now, revoked.
    pub after: Stored,
    /// The value it was rotated to.
    pub successor: TokenId,
}

/// Why [`end_overlaps`] stopped before the first value of the chain.
#[derive(Debug)]
pub enum Cut {
    /// This value is not found by id: dropped after `store.retention`, or
    /// its id's index lost (its own value, reported, still finds it).
    NotFound(TokenId),
    /// [`CHAIN_LIMIT`] values were walked; this one was not looked at.
    TooLong(TokenId),
    /// The store failed reading or writing this one: a retry of the whole
    /// call walks the chain again.
    Store(TokenId, StoreError),
}

/// What [`end_overlaps`] did.
#[derive(Debug, Default)]
pub struct Walk {
    /// The values whose overlaps it ended, newest first.
    pub ended: Vec<EndedOverlap>,
    /// Where it stopped short, if it did.
    pub cut: Option<Cut>,
}

/// Walks back from `revoked` along `rotated_from` and revokes, by `by`,
/// each value rotated to the one after it whose overlap still runs
/// ([`overlap_ended`]). A value `judge` refuses (one the caller may not
/// act on) is left as it is, and the walk goes on past it; a value already
/// revoked does not stop it either (an overlap shorter than the one before
/// it ends first). Stops at the chain's first value, a broken link (a
/// value not rotated to the one after it), or a [`Cut`].
pub async fn end_overlaps<S, E>(
    store: &S,
    revoked: &TokenRecord,
    by: &str,
    now: Timestamp,
    judge: impl Fn(&TokenRecord) -> Result<(), E>,
) -> Walk
where
    S: TokenStore,
{
    let mut walk = Walk::default();
    let mut successor = revoked.id.clone();
    let mut next = revoked.rotated_from.clone();
    let mut walked = 0;
    while let Some(id) = next.take() {
        if walked == CHAIN_LIMIT {
            tracing::warn!(
                target: "hawzu_gate::admin",
                token_id = %id,
                rotated_to = %successor,
                limit = CHAIN_LIMIT,
                "a chain of rotations is longer than is followed: the values before this one were not looked at; if any may still work (a rotation overlap), revoke it by id"
            );
            walk.cut = Some(Cut::TooLong(id));
            break;
        }
        walked += 1;
        // The last run's record, and whether that run ended its overlap
        // (a lost compare-and-set runs it again).
        let seen: Mutex<Option<(TokenRecord, bool)>> = Mutex::new(None);
        let ended = update(store, &id, |r| {
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            *seen = Some((r.clone(), false));
            judge(r)?;
            // Judged at this run's instant: a concurrent revoke (on any
            // gate) may have come a moment after `now`.
            let at = Timestamp::now().max(now);
            let next = overlap_ended(r, &successor, by.to_owned(), at);
            *seen = Some((r.clone(), next.is_some()));
            Ok::<_, E>(next)
        })
        .await;
        let seen = seen.into_inner().unwrap_or_else(PoisonError::into_inner);
        match ended {
            Ok(stored) => {
                if let Some((before, true)) = &seen {
                    walk.ended.push(EndedOverlap {
                        before: before.clone(),
                        after: stored,
                        successor: successor.clone(),
                    });
                }
            }
            Err(UpdateError::Refused(_)) => {}
            Err(UpdateError::NotFound) => {
                walk.cut = Some(Cut::NotFound(id));
                break;
            }
            Err(UpdateError::Store(e)) => {
                walk.cut = Some(Cut::Store(id, e));
                break;
            }
        }
        let Some((found, _)) = seen else { break };
        // A link only where the value names the one after it.
        if found.rotated_to.as_ref() != Some(&successor) {
            break;
        }
        next = found.rotated_from;
        successor = id;
    }
    walk
}
