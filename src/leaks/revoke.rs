//! Revoking a leaked token: the one place a leak report changes a token.
//! It looks the token up by hash and revokes it with the admin API's
//! compare-and-set through the cache (`store::update_by_hash`: the store's
//! write, this gate's invalidation and the fleet's invalidation event), then
//! writes one `leak_report` audit event under the revocation's claim
//! (`TokenCache::record_change`) with the reason `leaked` and where the
//! report says the token was found.
//!
//! Idempotent: a token already revoked (a replayed report, a second
//! scanner) is left as it is and gets no second event. Only when the
//! report may repeat this reporter's own try (a GitHub report, or the
//! public door's next try of one report) and the reporter revoked it within
//! the hour — perhaps by that try, whose answer was lost after Redis took
//! it, so that no gate was told and no event written — is it confirmed
//! (written again and told to every gate) and its event written unless
//! that try wrote it (one claim per revocation, as the admin API's); a
//! fresh public report of a revoked value costs reads, never a fleet-wide
//! write. The holder of a
//! secret may always kill it, so no caller check applies; it never logs or
//! records the secret, only the token's id.

use std::sync::Arc;

use jiff::Timestamp;

use crate::audit::late_repeat;
use crate::audit::{Action, AuditEvent, Origin};
use crate::cache::TokenCache;
use crate::redact::redact_secrets;
use crate::store::{self, Cut, Store, StoreError, TokenStore, UpdateError, update_by_hash};
use crate::token::{TokenRecord, TokenSecret};

/// The reason word of a leak's revocation (the audit event's `reason`
/// starts with it).
pub const REASON: &str = "leaked";
/// Longest `url` or `source` kept from a report.
const MAX_FIELD: usize = 512;

/// What a report found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A real token; this report revoked it.
    Revoked,
    /// A real token, revoked before: no second event (and nothing written
    /// unless it may be this reporter's own lost try).
    AlreadyRevoked,
    /// No token with this value.
    Unknown,
}

/// Where a report says the token was seen, as the audit event keeps it.
#[derive(Debug, Clone)]
pub struct Sighting<'a> {
    /// `github` or `public`.
    pub reporter: &'a str,
    pub url: &'a str,
    pub source: &'a str,
}

impl Sighting<'_> {
    /// `leaked (reported by github; source: content; url: https://…)`, with
    /// control, line-separator and bidirectional characters dropped, each field cut to 512 characters, and
    /// anything shaped like a secret redacted (a URL may hold the token).
    pub fn reason(&self) -> String {
        let clean = |s: &str| -> String {
            let kept: String = s
                .chars()
                .filter(|&c| !crate::redact::acts_on_a_reader(c))
                .take(MAX_FIELD)
                .collect();
            redact_secrets(&kept).into_owned()
        };
        let mut reason = format!("{REASON} (reported by {}", self.reporter);
        if !self.source.is_empty() {
            reason.push_str("; source: ");
            reason.push_str(&clean(self.source));
        }
        if !self.url.is_empty() {
            reason.push_str("; url: ");
            reason.push_str(&clean(self.url));
        }
        reason.push(')');
        reason
    }
}

/// Looks `secret` up by hash and revokes it (see the module header).
/// `retry`: this report may repeat a try of the same reporter whose answer
/// was lost — a GitHub report (only GitHub signs them), or the public
/// door's own next try; never a fresh public report, which anyone may
/// send again.
pub async fn revoke_leaked(
    cache: &Arc<TokenCache<Store>>,
    secret: &TokenSecret,
    origin: &Origin,
    sighting: &Sighting<'_>,
    now: Timestamp,
    retry: bool,
) -> Result<Found, StoreError> {
    let Some(found) = cache.get(&secret.hash()).await? else {
        return Ok(Found::Unknown);
    };
    // Revoked before, and not perhaps by this reporter's own lost try (a
    // report that may repeat one, of a revocation it made within the
    // hour): nothing to confirm. A replay of a public value must not make
    // every gate re-read it.
    let own_lost_try = retry
        && late_repeat(
            found.revoked_at,
            found.revoked_by.as_deref(),
            &origin.actor,
            Timestamp::now(),
        );
    if found.is_revoked_at(now) && !own_lost_try {
        end_overlap(cache, &found, origin, sighting, now).await?;
        return Ok(Found::AlreadyRevoked);
    }
    // The record the write replaced, for the audit event.
    let before = std::sync::Mutex::new(None);
    // The closure's last run is the one that counts (a lost
    // compare-and-set runs it again): `before` is set only when that run
    // revokes, so a concurrent report that got there first is seen.
    // By the secret's hash, not the id: the report holds the secret, and
    // the id's index may be what a fault lost.
    let written = update_by_hash(&**cache, &secret.hash(), |r: &TokenRecord| {
        let mut b = before.lock().unwrap_or_else(|e| e.into_inner());
        // Judged at this run's instant, not the report's: a concurrent
        // report (on any gate) may have revoked it a moment after `now`.
        // A rotated token whose overlap still runs (a `revoked_at` still
        // to come) is revoked now, as the admin API's revoke does.
        let at = Timestamp::now().max(now);
        if r.is_revoked_at(at) {
            *b = None;
            return Ok::<_, ()>(None);
        }
        *b = Some(r.clone());
        Ok(Some(TokenRecord {
            revoked_at: Some(Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at)),
            revoked_by: Some(origin.actor.clone()),
            ..r.clone()
        }))
    })
    .await;
    let stored = match written {
        Ok(stored) => stored,
        Err(UpdateError::NotFound | UpdateError::Refused(())) => return Ok(Found::Unknown),
        Err(UpdateError::Store(e)) => return Err(e),
    };
    // `update` hands back the record as found when nothing changed, and
    // confirmed: written again and told to every gate — this may be the
    // retry of a report whose revocation Redis made while its answer was
    // lost, so that its event never went out.
    let Some(before) = before.into_inner().unwrap_or_else(|e| e.into_inner()) else {
        let r = &stored.record;
        // Revoked by this reporter a moment ago: perhaps by that try, whose
        // audit event is written now, under the revocation's claim (once).
        if let Some(at) = r.revoked_at.filter(|_| {
            late_repeat(
                r.revoked_at,
                r.revoked_by.as_deref(),
                &origin.actor,
                Timestamp::now(),
            )
        }) {
            let unset = TokenRecord {
                revoked_at: None,
                revoked_by: None,
                ..r.clone()
            };
            let event = AuditEvent::leak_reported(origin, at, &unset, r, sighting.reason());
            cache
                .record_change(Action::Revoke, at, &origin.actor, event, false)
                .await;
        }
        end_overlap(cache, r, origin, sighting, now).await?;
        return Ok(Found::AlreadyRevoked);
    };
    let reason = sighting.reason();
    tracing::warn!(
        target: "hawzu_gate::admin",
        op = "revoke",
        token_id = %stored.record.id,
        workspace_id = %stored.record.workspace_id,
        by = %origin.actor,
        reason = %reason,
        "token revoked: its secret was reported leaked"
    );
    let event = AuditEvent::leak_reported(origin, now, &before, &stored.record, reason);
    let at = stored.record.revoked_at.unwrap_or(now);
    record_revocation(cache, at, &origin.actor, event, true).await;
    end_overlap(cache, &stored.record, origin, sighting, now).await?;
    Ok(Found::Revoked)
}

/// Writes the event of a revocation stamped `at` by `by` under its claim
/// (`TokenCache::record_change`), which a report's retry finds: once,
/// whichever writes it. In a task of its own, awaited: a report cut off by
/// its deadline cannot leave the claim without its event.
async fn record_revocation(
    cache: &Arc<TokenCache<Store>>,
    at: Timestamp,
    by: &str,
    event: AuditEvent,
    first: bool,
) {
    let (cache, by) = (cache.clone(), by.to_owned());
    let _ = tokio::spawn(async move {
        cache
            .record_change(Action::Revoke, at, &by, event, first)
            .await;
    })
    .await;
}

/// Every value the rotations of `revoked` replaced, revoked now if its
/// overlap still runs: whoever holds the leaked value may hold the ones
/// before it (see [`store::end_overlaps`]). Each has its own audit event,
/// naming the same report. In a task of its own, awaited: a report cut
/// off by its deadline leaves no value ended without its event.
async fn end_overlap(
    cache: &Arc<TokenCache<Store>>,
    revoked: &TokenRecord,
    origin: &Origin,
    sighting: &Sighting<'_>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let (cache, revoked, origin) = (cache.clone(), revoked.clone(), origin.clone());
    let reason = sighting.reason();
    tokio::spawn(async move { end_overlap_now(&cache, &revoked, &origin, &reason, now).await })
        .await
        .map_err(|e| StoreError::Unavailable(format!("ending rotation overlaps failed: {e}")))?
}

async fn end_overlap_now(
    cache: &TokenCache<Store>,
    revoked: &TokenRecord,
    origin: &Origin,
    reason: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let walk = store::end_overlaps(cache, revoked, &origin.actor, now, |_| Ok::<_, ()>(())).await;
    for (ended, at, first) in walk.to_record(now) {
        let r = &ended.after.record;
        if first {
            tracing::warn!(
                target: "hawzu_gate::admin",
                op = "revoke",
                token_id = %r.id,
                rotated_to = %ended.successor,
                workspace_id = %r.workspace_id,
                by = %origin.actor,
                "token revoked: a later value of its chain of rotations was reported leaked, and its overlap ended"
            );
        }
        let event = AuditEvent::leak_reported(
            origin,
            if first { now } else { at },
            &ended.before,
            r,
            format!("{reason} (its successor {})", ended.successor),
        );
        // In this task already: under the revocation's claim, as the
        // leaked value's own event.
        cache
            .record_change(Action::Revoke, at, &origin.actor, event, first)
            .await;
    }
    match walk.cut {
        Some(Cut::Store(_, e)) => Err(e),
        // Dropped after `store.retention` — or its id's index lost, when
        // only a report of its own value (which holds the secret) finds it.
        Some(Cut::NotFound(id)) => {
            tracing::warn!(
                target: "hawzu_gate::admin",
                token_id = %id,
                leaked = %revoked.id,
                "a value a leaked token's chain of rotations replaced cannot be found by id: if it may still work (a rotation overlap), revoke it by its own value or id"
            );
            Ok(())
        }
        // Logged by the walk.
        Some(Cut::TooLong(_) | Cut::Cycle(_)) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_says_leaked_and_where_without_secrets_or_control_characters() {
        let t = TokenSecret::generate().unwrap();
        let url = format!("https://github.com/o/r/blob/x/a.env?t={}\n", t.expose());
        let reason = Sighting {
            reporter: "github",
            url: &url,
            source: "content",
        }
        .reason();
        assert!(reason.starts_with("leaked (reported by github; source: content; url: https://github.com/o/r/blob/x/a.env?t=hwz_…redacted"), "{reason}");
        assert!(!reason.contains(&t.expose()[4..]));
        assert!(!reason.contains('\n'));
        let long = "x".repeat(5000);
        let reason = Sighting {
            reporter: "public",
            url: &long,
            source: "",
        }
        .reason();
        assert!(reason.len() < 600, "{}", reason.len());
        // What reorders or breaks the text where it is shown (the console,
        // the CLI, a log) is dropped too: `txt.exe` is not `exe.txt`.
        let reason = Sighting {
            reporter: "public",
            url: "https://x.example/a\u{202E}txt.exe\u{2028}b\u{2066}c",
            source: "paste\u{200F}bin",
        }
        .reason();
        assert!(
            !reason.contains(['\u{202E}', '\u{2028}', '\u{2066}', '\u{200F}']),
            "{reason:?}"
        );
        assert!(reason.contains("atxt.exebc"), "{reason:?}");
    }
}
