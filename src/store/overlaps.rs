//! [`end_overlaps`]: a revoked value takes with it every value its chain of
//! rotations replaced whose overlap still runs — whoever holds one value of
//! a chain may hold them all.
//!
//! A token rotated again while the value before it still works (a daily
//! rotation with a week's overlap) has several values working at once;
//! ending only the one a revoked value replaced would leave the older ones
//! working for the rest of their overlaps.

use std::sync::{Mutex, PoisonError};

use jiff::{SignedDuration, Timestamp};

use super::{StoreError, Stored, TokenStore, UpdateError, update};
use crate::audit::late_repeat;
use crate::token::{TokenId, TokenRecord, overlap_ended};

/// How many values back [`end_overlaps`] follows a chain. Values are read
/// to be passed (a write only ends an overlap), and the walk stops where no
/// value behind can still work ([`OVERLAP_CEILING`]); a chain longer than
/// this within that time is one rotated every few hours with overlaps of
/// days — its oldest values are logged, not followed.
pub const CHAIN_LIMIT: usize = 1000;

/// The longest overlap `admin.max_rotation_overlap` can ever have allowed:
/// every value behind a value created at `t` was rotated by `t`, so none
/// works past `t` plus this, whatever the setting was then.
pub const OVERLAP_CEILING: SignedDuration = SignedDuration::from_hours(366 * 24);

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
    /// This value was met before: the records loop (corrupt data).
    Cycle(TokenId),
}

/// What [`end_overlaps`] did.
#[derive(Debug, Default)]
pub struct Walk {
    /// The values whose overlaps it ended, newest first.
    pub ended: Vec<EndedOverlap>,
    /// The values it found ended already by `by` within the hour
    /// ([`late_repeat`]): perhaps by an earlier try of this call whose
    /// answer was lost after the store took it — whose event the caller
    /// writes now, under the revocation's claim (once).
    pub late: Vec<EndedOverlap>,
    /// Where it stopped short, if it did.
    pub cut: Option<Cut>,
}

impl Walk {
    /// The values whose events the walk's caller writes, each under its
    /// revocation's claim: with the revocation's time, and whether this
    /// walk ended it (`true`: the change's own event) or found it ended by
    /// the caller lately (`false`: perhaps a lost try's, written unless
    /// that try wrote it).
    pub fn to_record(
        &self,
        now: Timestamp,
    ) -> impl Iterator<Item = (&EndedOverlap, Timestamp, bool)> {
        let ended = self
            .ended
            .iter()
            .map(move |e| (e, e.after.record.revoked_at.unwrap_or(now), true));
        let late = self
            .late
            .iter()
            .filter_map(|e| Some((e, e.after.record.revoked_at?, false)));
        ended.chain(late)
    }
}

/// Walks back from `revoked` along `rotated_from` and revokes, by `by`,
/// each value rotated to the one after it whose overlap still runs
/// ([`overlap_ended`]). A value `judge` refuses (one the caller may not
/// act on) is left as it is, and the walk goes on past it; a value already
/// revoked does not stop it either (an overlap shorter than the one before
/// it ends first). A value passed is only read; one ended is written by
/// compare-and-set. Stops at the chain's first value, a broken link (a
/// value not rotated to the one after it), where no value behind can still
/// work ([`OVERLAP_CEILING`]), or at a [`Cut`].
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
    // When the value after the next one was made: the next one's rotation.
    let mut rotated_at = revoked.created_at;
    let mut next = revoked.rotated_from.clone();
    let mut seen = std::collections::HashSet::from([revoked.id.clone()]);
    while let Some(id) = next.take() {
        if rotated_at
            .checked_add(OVERLAP_CEILING)
            .is_ok_and(|end| end <= now)
        {
            break;
        }
        if !seen.insert(id.clone()) {
            tracing::warn!(
                target: "hawzu_gate::admin",
                token_id = %id,
                "a chain of rotations loops back to this token (corrupt records): not followed further"
            );
            walk.cut = Some(Cut::Cycle(id));
            break;
        }
        if seen.len() > CHAIN_LIMIT {
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
        let stored = match store.find(&id).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                walk.cut = Some(Cut::NotFound(id));
                break;
            }
            Err(e) => {
                walk.cut = Some(Cut::Store(id, e));
                break;
            }
        };
        let found = stored.record.clone();
        // A link only where the value names the one after it.
        if found.rotated_to.as_ref() != Some(&successor) {
            break;
        }
        let at = Timestamp::now().max(now);
        let ends = overlap_ended(&found, &successor, by.to_owned(), at).is_some();
        if !ends
            && found.is_revoked_at(at)
            && late_repeat(found.revoked_at, found.revoked_by.as_deref(), by, at)
            && judge(&found).is_ok()
        {
            walk.late.push(EndedOverlap {
                before: TokenRecord {
                    revoked_at: None,
                    revoked_by: None,
                    ..found.clone()
                },
                after: stored,
                successor: successor.clone(),
            });
        } else if ends && judge(&found).is_ok() {
            match end_one(store, &id, &successor, by, now, &judge).await {
                Ok(Some(ended)) => walk.ended.push(ended),
                // Ended meanwhile by another writer, or refused now.
                Ok(None) => {}
                Err(UpdateError::NotFound) => {
                    walk.cut = Some(Cut::NotFound(id));
                    break;
                }
                Err(UpdateError::Store(e)) => {
                    walk.cut = Some(Cut::Store(id, e));
                    break;
                }
                Err(UpdateError::Refused(())) => {}
            }
        }
        next = found.rotated_from;
        rotated_at = found.created_at;
        successor = id;
    }
    walk
}

/// Ends the overlap of `id` (rotated to `successor`) by compare-and-set,
/// judged again at each run; `None` when the last run found nothing to end.
async fn end_one<S, E>(
    store: &S,
    id: &TokenId,
    successor: &TokenId,
    by: &str,
    now: Timestamp,
    judge: impl Fn(&TokenRecord) -> Result<(), E>,
) -> Result<Option<EndedOverlap>, UpdateError<()>>
where
    S: TokenStore,
{
    // The last run's record, if that run ended its overlap (a lost
    // compare-and-set runs it again).
    let before: Mutex<Option<TokenRecord>> = Mutex::new(None);
    let stored = update(store, id, |r| {
        let mut before = before.lock().unwrap_or_else(PoisonError::into_inner);
        *before = None;
        if judge(r).is_err() {
            return Ok(None);
        }
        // Judged at this run's instant: a concurrent revoke (on any gate)
        // may have come a moment after `now`.
        let next = overlap_ended(r, successor, by.to_owned(), Timestamp::now().max(now));
        *before = next.is_some().then(|| r.clone());
        Ok::<_, ()>(next)
    })
    .await?;
    let before = before.into_inner().unwrap_or_else(PoisonError::into_inner);
    Ok(before.map(|before| EndedOverlap {
        before,
        after: stored,
        successor: successor.clone(),
    }))
}
