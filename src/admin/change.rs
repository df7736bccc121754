//! The admin handlers that change a token's value or settings: rotate
//! (`POST /admin/v1/tokens/{id}/rotate`) and update
//! (`PATCH /admin/v1/tokens/{id}`).
//!
//! The rules are `token::change`'s; here they run inside the
//! compare-and-set that writes the record, after `Caller::may_act_on`, so
//! they judge the record written over, never an older read — and the
//! caller is the one `caller::judged_now` read again once the body was. A secret
//! appears only in a rotate's answer. Each change that succeeded is then
//! one audit event (`admin::audit::record`).

use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use jiff::Timestamp;

use crate::audit::{Action, AuditEvent, Origin};
use crate::store::{self, RotateError, Rotation, update};
use crate::token::change::{ValidRotate, successor};
use crate::token::{ChangeRefusal, TokenId, TokenRecord, TokenSecret};

use super::audit::{record as audit, record_stamped};
use super::caller::{ADMIN_LABEL, Caller, judged_now};
use super::error::{ApiError, field};
use super::extract::{JsonBody, OptionalJsonBody, PathId, Reply};
use super::state::AdminState;
use super::tokens::{end_overlaps, stamp};
use super::wire::{Created, RotateRequest, TokenAnswer, TokenView, UpdateRequest};

fn refused(r: ChangeRefusal) -> ApiError {
    match r {
        ChangeRefusal::State { code, message } => ApiError::State {
            code,
            message: message.into(),
        },
        ChangeRefusal::Fields(f) => ApiError::Validation(f),
    }
}

/// A new secret and id with the same name, description and scope; the
/// expiry asked for (default: the old one). The old token is revoked, at
/// once or at the end of the asked overlap (`revoked_at` in the future, so
/// every gate refuses it from that instant, cached or not), and names its
/// successor in `rotated_to`.
///
/// The two writes are `store::rotate`'s: the successor first, then the
/// old token's state check and revocation as one compare-and-set, so of
/// concurrent rotates (on any gate of a fleet) exactly one wins and the
/// others answer 409 `token_revoked` (naming the successor while an
/// overlap runs), their successors withdrawn. A failure never undoes
/// anything on the old token: a revocation made meanwhile stays.
pub async fn rotate(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Extension(origin): Extension<Origin>,
    PathId(id): PathId,
    OptionalJsonBody(req): OptionalJsonBody<RotateRequest>,
) -> Result<Reply<Created>, ApiError> {
    // The body is read: the caller as it is now, not as it came in.
    let caller = judged_now(&api, caller).await?;
    let id = &id;
    let now = Timestamp::now();
    let policy = api.policy();
    let secret = TokenSecret::generate_with(policy.prefixes.mint()).map_err(ApiError::fault)?;
    let new_id = TokenId::generate().map_err(ApiError::fault)?;
    // The last run's validation: the one of the record written over.
    let chosen: Mutex<Option<ValidRotate>> = Mutex::new(None);
    let plan = |r: &TokenRecord| {
        caller.may_act_on(&policy, r)?;
        let valid = req.validate(r, api.rotation, now).map_err(refused)?;
        governed_rotate(&policy, r, &valid, now)?;
        if let Some(why) = caller.outlived_by(valid.expires_at) {
            return Err(if valid.expires_given {
                ApiError::Validation(field("expires", why))
            } else {
                ApiError::forbidden(format!(
                    "A token cannot rotate a token that would outlive it: its expiry {why}."
                ))
            });
        }
        // The successor keeps the old token's networks.
        if let Some(why) = caller.widened_by(&r.allow_from) {
            return Err(ApiError::forbidden(format!(
                "A token cannot rotate a token usable from networks beyond its own: its allow_from {why}. Narrow it first (PATCH allow_from)."
            )));
        }
        let old = TokenRecord {
            revoked_at: Some(stamp(valid.old_until)),
            // Without an overlap the old value is revoked at once.
            revoked_by: (valid.old_until <= now).then(|| caller.label()),
            rotated_to: Some(new_id.clone()),
            ..r.clone()
        };
        let successor = successor(r, new_id.clone(), &valid, caller.label(), stamp(now));
        *chosen.lock().unwrap_or_else(PoisonError::into_inner) = Some(valid);
        Ok(Rotation { old, successor })
    };
    let rotated = store::rotate(&*api.cache, id, &secret.hash(), plan)
        .await
        .map_err(|e| match e {
            RotateError::NotFound => ApiError::not_found(id.as_str()),
            RotateError::Refused(e) => e,
            RotateError::Changed => ApiError::State {
                code: "conflict",
                message: "The token was changed while it was being rotated; nothing was rotated: rotate it again.".into(),
            },
            RotateError::Store(e) => ApiError::store(e),
        })?;
    let valid = chosen
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .ok_or_else(|| ApiError::fault("a rotate wrote no validated record"))?;
    let (before, old, new) = (rotated.before, rotated.old, rotated.successor);
    tracing::info!(
        target: "hawzu_gate::admin",
        op = "rotate",
        token_id = %new.id,
        rotated_from = %id,
        old_works_until = %stamp(valid.old_until),
        workspace_id = %new.workspace_id,
        by = %caller.label(),
        "token rotated"
    );
    let event = AuditEvent::rotated(&origin, now, &before, &old.record, &new);
    match (&old.record.revoked_at, &old.record.revoked_by) {
        // Revoked at once: under the revoke's claim, so that a `DELETE` of
        // the old token by this caller later finds its event. A revoke as
        // a `DELETE` is, it ends the overlaps of the values before it.
        (Some(at), Some(by)) => {
            record_stamped(&api, Action::Revoke, *at, by, event, true).await;
            // The rotate took place: its answer (the one showing of the
            // new secret) waits neither for the walk nor on its failure.
            let (api, caller, origin) = (api.clone(), caller.clone(), origin.clone());
            let (old, id) = (old.record.clone(), id.clone());
            tokio::spawn(async move {
                if let Err(e) = end_overlaps(&api, &caller, &origin, &old, now).await {
                    tracing::warn!(
                        target: "hawzu_gate::admin",
                        token_id = %id,
                        error = %e,
                        "the token was rotated and revoked, but the overlaps of the values before it could not be ended: revoke it again (DELETE) to end them"
                    );
                }
            });
        }
        // The successor revoked by id between the two writes (listed from
        // the first): that revoke's walk found the old token not yet
        // naming it, so its overlap is ended here — whoever holds one value
        // may hold both. In a task of its own (a caller gone now leaves
        // nothing undone), the rotate's event first.
        _ if new.is_revoked_at(Timestamp::now()) => {
            let (api, caller, origin) = (api.clone(), caller.clone(), origin.clone());
            let (new, id) = (new.clone(), id.clone());
            tokio::spawn(async move {
                audit(&api, event).await;
                if let Err(e) = end_overlaps(&api, &caller, &origin, &new, now).await {
                    tracing::warn!(
                        target: "hawzu_gate::admin",
                        token_id = %id,
                        error = %e,
                        "the token was rotated to a successor revoked meanwhile, but its overlap could not be ended: revoke it (DELETE)"
                    );
                }
            });
        }
        _ => audit(&api, event).await,
    }
    Ok(Reply(
        StatusCode::CREATED,
        Created {
            token: TokenView::of(&new, now),
            secret: secret.expose().to_owned(),
            old: Some(TokenView::of(&old.record, now)),
        },
    ))
}

/// Limits the admin key set (or of unknown origin: set before `limits_by`
/// was recorded) are an operator's decision, as its disable is: a token
/// caller may narrow them, not lift them — no network beyond those listed,
/// no `not_before` still to come moved earlier or removed. Records in
/// `next.limits_by` who set the limits it ends with: the admin key asking
/// (`asked`) for limits already in place takes them over.
fn limits_kept(
    caller: &Caller,
    r: &TokenRecord,
    next: &mut TokenRecord,
    asked: bool,
    now: Timestamp,
) -> Result<(), ApiError> {
    let same = next.allow_from == r.allow_from && next.not_before == r.not_before;
    let by_admin =
        r.has_context_limits() && r.limits_by.as_deref().is_none_or(|by| by == ADMIN_LABEL);
    if by_admin && !same && !matches!(caller, Caller::Admin) {
        let networks_lifted = !r.allow_from.is_empty()
            && (next.allow_from.is_empty()
                || !next
                    .allow_from
                    .iter()
                    .all(|n| r.allow_from.iter().any(|own| own.covers(n))));
        let start_lifted = r
            .not_before
            .is_some_and(|t| t > now && next.not_before.is_none_or(|n| n < t));
        if networks_lifted || start_lifted {
            return Err(ApiError::forbidden(
                "The token's limits (allow_from, not_before) were set with the admin key; only the admin key can lift them.",
            ));
        }
    }
    next.limits_by = if !next.has_context_limits() {
        None
    } else if same && asked && matches!(caller, Caller::Admin) {
        Some(ADMIN_LABEL.into())
    } else if same {
        r.limits_by.clone()
    } else if by_admin {
        // Narrowed by a token caller: still the admin key's to lift.
        Some(ADMIN_LABEL.into())
    } else {
        Some(caller.label())
    };
    Ok(())
}

/// The governance of a rotate (`[tokens]`): the successor's expiry within
/// the longest lifetime (a 422 on `expires`, also when inherited), and its
/// roles — the old token's — within the highest role (403: a rotate never
/// changes a scope; create a new token).
fn governed_rotate(
    policy: &crate::policy::Policy,
    old: &TokenRecord,
    valid: &ValidRotate,
    now: Timestamp,
) -> Result<(), ApiError> {
    let gov = &policy.governance;
    if let Err(why) = gov.check_expiry(&old.workspace_id, valid.expires_at, now) {
        let why = if valid.expires_given {
            why
        } else {
            format!("the old token's expiry {why}; give one within it")
        };
        return Err(ApiError::Validation(field("expires", why)));
    }
    for role in super::caller::roles_of(&old.scope) {
        // A successor of a role no longer defined would regain whatever a
        // later definition grants; create holds the same line.
        if policy.roles.get(role).is_none() {
            return Err(ApiError::forbidden(format!(
                "The token cannot be rotated: its role `{role}` is not defined (roles.{role}), and its successor would gain whatever a later definition grants. Create a new token with a defined role."
            )));
        }
        if let Err(why) = gov.check_role(&policy.roles, &old.workspace_id, role) {
            return Err(ApiError::forbidden(format!(
                "The token cannot be rotated: {why}. Create a new token with a role within it."
            )));
        }
    }
    Ok(())
}

/// `PATCH /admin/v1/tokens/{id}`: name, description and a shorter expiry;
/// nothing else, and never a later expiry (422 naming the field).
pub async fn update_token(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Extension(origin): Extension<Origin>,
    PathId(id): PathId,
    JsonBody(req): JsonBody<UpdateRequest>,
) -> Result<Reply<TokenAnswer>, ApiError> {
    // The body is read: the caller as it is now, not as it came in.
    let caller = judged_now(&api, caller).await?;
    let now = Timestamp::now();
    let policy = api.policy();
    // The record the last run judged: the one written over.
    let before: Mutex<Option<TokenRecord>> = Mutex::new(None);
    let stored = update(&*api.cache, &id, |r| {
        *before.lock().unwrap_or_else(PoisonError::into_inner) = Some(r.clone());
        caller.may_act_on(&policy, r)?;
        let asks_limits = req.allow_from.is_some() || req.not_before.is_some();
        let mut next = req.apply(r, now).map_err(refused)?;
        // Limits already as asked: still the admin key's to take over
        // (below), so judged as a change that may write `limits_by`.
        if next.is_none() && asks_limits && r.has_context_limits() {
            next = Some(r.clone());
        }
        // Limits set by this caller stay within its own networks (also
        // when they are already what it asks: none of its making).
        if req.allow_from.is_some()
            && let Some(why) =
                caller.widened_by(next.as_ref().map_or(&r.allow_from, |n| &n.allow_from))
        {
            return Err(ApiError::Validation(field("allow_from", why)));
        }
        if let Some(n) = &mut next {
            limits_kept(&caller, r, n, asks_limits, now)?;
        }
        // Nothing to write (the limits already as asked, and whose they were).
        if next.as_ref() == Some(r) {
            next = None;
        }
        // A new expiry is held to `[tokens]` max_lifetime as at create.
        if req.expires.is_some()
            && let Some(n) = &next
            && let Err(why) = policy
                .governance
                .check_expiry(&n.workspace_id, n.expires_at, now)
        {
            return Err(ApiError::Validation(field("expires", why)));
        }
        Ok(next)
    })
    .await
    .map_err(|e| ApiError::from_update(e, &id))?;
    let before = before
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .unwrap_or_else(|| stored.record.clone());
    // Nothing changed: no audit event, no webhook (see `tokens::change`).
    let changed = before != stored.record;
    tracing::info!(
        target: "hawzu_gate::admin",
        op = "update",
        token_id = %id,
        workspace_id = %stored.record.workspace_id,
        by = %caller.label(),
        changed,
        "token updated"
    );
    if changed {
        audit(
            &api,
            AuditEvent::changed(Action::Update, &origin, now, &before, &stored.record),
        )
        .await;
    }
    Ok(Reply(
        StatusCode::OK,
        TokenAnswer {
            token: TokenView::of(&stored.record, now),
        },
    ))
}
