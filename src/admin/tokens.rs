//! The token handlers of the admin API: create, list, show, disable,
//! enable and revoke (rotate and update: `admin::change`).
//!
//! Every action on an existing token passes `Caller::may_reach` (through
//! `may_act_on`), inside the compare-and-set that writes it, so it judges
//! the record written over, never an older read. A secret appears only in
//! the answers of create and rotate. Each change that succeeded is then one
//! audit event (`admin::audit::record`), with the record before and after.
//! No routing, no authentication here (`admin::routes` did both before a
//! handler runs), but every change first judges a token caller again, as
//! the store holds it once the body is read (`caller::judged_now`).

use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use http::StatusCode;
use jiff::{SignedDuration, Timestamp};

use crate::audit::{Action, AuditEvent, Origin};
use crate::store::{
    self, Cursor, Cut, DEFAULT_PAGE, ListFilter, ListQuery, MAX_PAGE, StoreError, TokenStore,
    update,
};
use crate::token::expiry::{parse_within, window_end};
use crate::token::{
    FieldErrors, TokenId, TokenKind, TokenRecord, TokenSecret, TokenState, record::RECORD_VERSION,
};

use super::audit::{record as audit, record_late, record_stamped};
use super::caller::{ADMIN_LABEL, Caller, Reach, judged_now};
use super::error::{ApiError, field};
use super::extract::{JsonBody, PathId, Reply};
use super::state::AdminState;
use super::usage::{parse_window, recent_requests};
use super::wire::{
    CreateRequest, Created, ListPage, ScopePermissions, ShownToken, TokenAnswer, TokenView,
};

/// `POST /admin/v1/tokens`.
pub async fn create(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Extension(origin): Extension<Origin>,
    JsonBody(mut req): JsonBody<CreateRequest>,
) -> Result<Reply<Created>, ApiError> {
    // The body is read: the caller as it is now, not as it came in.
    let caller = judged_now(&api, caller).await?;
    let now = Timestamp::now();
    if let Caller::Token { .. } = caller {
        // A token caller is the creator; it cannot claim to be someone else.
        req.created_by = Some(caller.label());
    }
    // Before the request is judged: another workspace's limits are not
    // this caller's to learn from a refusal.
    if let Some(workspace_id) = &req.workspace_id {
        caller.may_enter(workspace_id)?;
    }
    let valid = req
        .validate(&api.policy(), now)
        .map_err(ApiError::Validation)?;
    caller.may_reach(
        &api.policy(),
        &valid.workspace_id,
        &valid.scope,
        None,
        Reach::Create,
    )?;
    if let Some(why) = caller.outlived_by(valid.expires_at) {
        return Err(ApiError::Validation(field("expires", why)));
    }
    if let Some(why) = caller.widened_by(&valid.limits.allow_from) {
        return Err(ApiError::Validation(field("allow_from", why)));
    }
    let secret =
        TokenSecret::generate_with(api.policy().prefixes.mint()).map_err(ApiError::fault)?;
    let limits_by = (!valid.limits.allow_from.is_empty() || valid.limits.not_before.is_some())
        .then(|| caller.label());
    let record = TokenRecord {
        v: RECORD_VERSION,
        id: TokenId::generate().map_err(ApiError::fault)?,
        name: valid.name,
        description: valid.description,
        workspace_id: valid.workspace_id,
        scope: valid.scope,
        created_by: valid.created_by,
        created_at: stamp(now),
        expires_at: valid.expires_at,
        disabled_at: None,
        disabled_by: None,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
        rotated_from: None,
        rotated_to: None,
        allow_from: valid.limits.allow_from,
        not_before: valid.limits.not_before,
        limits_by,
    };
    api.cache
        .create(&secret.hash(), &record)
        .await
        .map_err(ApiError::store)?;
    tracing::info!(
        target: "hawzu_gate::admin",
        op = "create",
        token_id = %record.id,
        workspace_id = %record.workspace_id,
        token_type = record.scope.kind().as_str(),
        by = %caller.label(),
        "token created"
    );
    audit(&api, AuditEvent::created(&origin, now, &record)).await;
    Ok(Reply(
        StatusCode::CREATED,
        Created {
            token: TokenView::of(&record, now),
            secret: secret.expose().to_owned(),
            old: None,
        },
    ))
}

/// The longest `unused` of a list: ten years.
const UNUSED_MAX: std::time::Duration = std::time::Duration::from_secs(3660 * 24 * 3600);

/// `GET /admin/v1/tokens`: one page, newest first. Each parameter at most
/// once; every faulty one is named.
pub async fn list(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Reply<ListPage>, ApiError> {
    let now = Timestamp::now();
    // Percent-decoded pairs (`+` is a space), in order, repeats kept.
    let Query(pairs) = query.map_err(|e| {
        ApiError::bad_request(
            "The list query cannot be read.",
            field("query", e.body_text()),
        )
    })?;
    let mut workspace = None;
    let mut filter = ListFilter::all(now);
    let mut cursor = None;
    let mut limit = DEFAULT_PAGE;
    let mut errors = FieldErrors::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in pairs {
        if !seen.insert(k.clone()) {
            errors.insert(k.clone(), "is given more than once".into());
            continue;
        }
        match k.as_str() {
            "workspace" if crate::token::record::valid_id(&v) => workspace = Some(v),
            "workspace" => {
                errors.insert(
                    k,
                    "must be 1-64 characters of A-Z, a-z, 0-9, `_` and `-`".into(),
                );
            }
            "type" => match v.as_str() {
                "workspace" => filter.kind = Some(TokenKind::Workspace),
                "project" => filter.kind = Some(TokenKind::Project),
                _ => {
                    errors.insert(k, format!("`{v}` is not a type; use workspace or project"));
                }
            },
            "state" => match TokenState::parse(&v) {
                Some(s) => filter.state = Some(s),
                None => {
                    errors.insert(
                        k,
                        format!("`{v}` is not a state; use enabled, disabled, expired or revoked"),
                    );
                }
            },
            "expiring" => match parse_within(&v) {
                Ok(within) => filter.expiring_by = window_end(within, now),
                Err(why) => {
                    errors.insert(k, why);
                }
            },
            "cursor" => match Cursor::decode(&v) {
                Some(c) => cursor = Some(c),
                None => {
                    errors.insert(k, "is not a next_cursor from a previous page".into());
                }
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                _ => {
                    errors.insert(k, format!("must be a number from 1 to {MAX_PAGE}"));
                }
            },
            // Unused for that long: last used before, or never used and
            // created before.
            "unused" => match parse_window("unused", &v, UNUSED_MAX, "ten years") {
                Ok(d) => {
                    filter.unused_since = SignedDuration::try_from(d)
                        .ok()
                        .and_then(|d| now.checked_sub(d).ok());
                }
                Err(e) => errors.extend(e),
            },
            _ => {
                errors.insert(
                    k,
                    "is not a parameter; use workspace, type, state, expiring, unused, cursor, limit"
                        .into(),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::bad_request(
            "The list query has invalid parameters; see `fields`.",
            errors,
        ));
    }
    if let Some(own) = caller.workspace() {
        match &workspace {
            Some(ws) if ws != own => {
                return Err(ApiError::forbidden(format!(
                    "This token manages workspace `{own}` only."
                )));
            }
            _ => workspace = Some(own.to_owned()),
        }
    }
    let policy = api.policy();
    let (shown, next_cursor) =
        visible_page(&api, &caller, &policy, workspace, cursor, limit, filter)
            .await
            .map_err(ApiError::store)?;
    let shown: Vec<&TokenRecord> = shown.iter().collect();
    let requests = recent_requests(&api, &shown, now).await;
    let tokens = shown
        .into_iter()
        .zip(requests)
        .map(|(r, requests)| TokenView {
            requests_7d: Some(requests),
            ..TokenView::of(r, now)
        })
        .collect();
    Ok(Reply(
        StatusCode::OK,
        ListPage {
            tokens,
            next_cursor: next_cursor.map(|c| c.encode()),
        },
    ))
}

/// Store pages read for one token caller's listing page before it answers
/// with what it found (each read scans a bounded number of entries).
const CALLER_PAGE_READS: usize = 4;

/// A page of the listing as `caller` may see it, and the cursor to go on
/// from. The admin key sees the store's page as it is. A token caller sees
/// only the tokens it may act on, and its cursor never names another: the
/// store is read on from the last one shown until the page is full, the
/// list ends, or [`CALLER_PAGE_READS`] reads; then the cursor is the last
/// token shown — or, when the reads ended on tokens it may not see, that
/// position's instant with no id (the tokens created in that very
/// millisecond are listed again; none is skipped; and when a whole call
/// stayed inside that millisecond, the position itself, so that paging
/// always moves on).
async fn visible_page(
    api: &AdminState,
    caller: &Caller,
    policy: &crate::policy::Policy,
    workspace: Option<String>,
    cursor: Option<Cursor>,
    limit: usize,
    filter: ListFilter,
) -> Result<(Vec<TokenRecord>, Option<Cursor>), StoreError> {
    let read = |cursor: Option<Cursor>| {
        api.cache.list(ListQuery {
            workspace: workspace.clone(),
            cursor,
            limit,
            filter,
        })
    };
    if let Caller::Admin = caller {
        let page = read(cursor).await?;
        return Ok((page.tokens, page.next));
    }
    let mut shown = Vec::with_capacity(limit);
    let started = cursor.clone();
    let mut from = cursor;
    for _ in 0..CALLER_PAGE_READS {
        let page = read(from).await?;
        for record in page.tokens {
            if caller.may_act_on(policy, &record).is_err() {
                continue;
            }
            shown.push(record);
            if shown.len() == limit {
                let next = shown.last().map(Cursor::of);
                return Ok((shown, next));
            }
        }
        match page.next {
            None => return Ok((shown, None)),
            Some(next) => from = Some(next),
        }
    }
    // Their instant, unless this call began at that very instant: then
    // the tokens of one millisecond fill more than its reads, and only
    // the position itself goes on from there.
    let next = from.map(|at| {
        let instant = Cursor::at_instant(at.created_ms);
        if started.as_ref() == Some(&instant) {
            at
        } else {
            instant
        }
    });
    Ok((shown, next))
}

/// Reads token `id` for `caller`: 404 when it does not exist or lies
/// outside the caller's workspace, 403 when it is above the caller.
pub(super) async fn find_for(
    api: &AdminState,
    caller: &Caller,
    id: &TokenId,
) -> Result<TokenRecord, ApiError> {
    let stored = api
        .cache
        .find(id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    caller.may_act_on(&api.policy(), &stored.record)?;
    Ok(stored.record)
}

/// `GET /admin/v1/tokens/{id}`.
pub async fn show(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Reply<ShownToken>, ApiError> {
    let now = Timestamp::now();
    let record = find_for(&api, &caller, &id).await?;
    Ok(Reply(
        StatusCode::OK,
        ShownToken {
            permissions: ScopePermissions::of(&record.scope, &api.policy().roles),
            token: TokenView::of(&record, now),
        },
    ))
}

/// `POST /admin/v1/tokens/{id}/disable`.
pub async fn disable(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Extension(origin): Extension<Origin>,
    PathId(id): PathId,
) -> Result<Reply<TokenAnswer>, ApiError> {
    change(&api, &caller, &origin, Change::Disable, &id).await
}

/// `POST /admin/v1/tokens/{id}/enable`.
pub async fn enable(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Extension(origin): Extension<Origin>,
    PathId(id): PathId,
) -> Result<Reply<TokenAnswer>, ApiError> {
    change(&api, &caller, &origin, Change::Enable, &id).await
}

/// `DELETE /admin/v1/tokens/{id}`.
pub async fn revoke(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    Extension(origin): Extension<Origin>,
    PathId(id): PathId,
) -> Result<Reply<TokenAnswer>, ApiError> {
    change(&api, &caller, &origin, Change::Revoke, &id).await
}

/// Disable, enable or revoke: one compare-and-set, then its audit event.
async fn change(
    api: &Arc<AdminState>,
    caller: &Caller,
    origin: &Origin,
    op: Change,
    id: &TokenId,
) -> Result<Reply<TokenAnswer>, ApiError> {
    let caller = &judged_now(api, caller.clone()).await?;
    let now = Timestamp::now();
    let policy = api.policy();
    // The record the last run judged: the one written over.
    let before: Mutex<Option<TokenRecord>> = Mutex::new(None);
    // The checks run inside the compare-and-set: they judge the record
    // that is written over, never an older read.
    let stored = update(&*api.cache, id, |r| {
        *before.lock().unwrap_or_else(PoisonError::into_inner) = Some(r.clone());
        caller.may_act_on(&policy, r)?;
        let mut next = r.clone();
        match op {
            Change::Disable | Change::Enable if r.is_revoked_at(now) => {
                return Err(ApiError::State {
                    code: "token_revoked",
                    message: "The token is revoked; a revoked token cannot be disabled or enabled.".into(),
                });
            }
            Change::Disable if r.disabled_at.is_none() => {
                next.disabled_at = Some(stamp(now));
                next.disabled_by = Some(caller.label());
            }
            // Disabled by a token caller or the unused-token policy: the
            // admin key asking again takes the disable over (its own
            // `disabled_at` kept), so that only the admin key enables it.
            Change::Disable if matches!(caller, Caller::Admin) && !disabled_by_admin(r) => {
                next.disabled_by = Some(caller.label());
            }
            Change::Enable if r.disabled_at.is_some() => {
                // A disable by the admin key (or of unknown origin: one
                // written before `disabled_by` was recorded) is an
                // operator's decision; a token caller cannot undo it.
                if disabled_by_admin(r) && !matches!(caller, Caller::Admin) {
                    return Err(ApiError::forbidden(
                        "The token was disabled with the admin key; only the admin key can enable it.",
                    ));
                }
                next.disabled_at = None;
                next.disabled_by = None;
            }
            // A rotated token whose overlap still runs is revoked now.
            Change::Revoke if !r.is_revoked_at(now) => {
                next.revoked_at = Some(stamp(now));
                next.revoked_by = Some(caller.label());
            }
            // Already in the asked state: nothing to write.
            _ => return Ok(None),
        }
        Ok(Some(next))
    })
    .await
    .map_err(|e| ApiError::from_update(e, id))?;
    let before = before
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .unwrap_or_else(|| stored.record.clone());
    // Found as asked: no change, so no audit event (nor webhook) — one
    // tenant repeating a disable would push other workspaces' events out
    // of the log they share. The admin log still names the caller.
    let changed = before != stored.record;
    tracing::info!(
        target: "hawzu_gate::admin",
        op = op.as_str(),
        token_id = %id,
        workspace_id = %stored.record.workspace_id,
        by = %caller.label(),
        "token {}{}{}",
        if changed { "" } else { "already " },
        op.past_tense(),
        if changed { "" } else { ": nothing changed" }
    );
    let r = &stored.record;
    let event = || AuditEvent::changed(op.action(), origin, now, &before, r);
    match (changed, op.stamp(r)) {
        // Under the change's claim, which a repeat finds (below).
        (true, Some(Stamp { at, by, .. })) => {
            let (at, by) = (at.unwrap_or(now), by.unwrap_or_default());
            record_stamped(api, op.action(), at, by, event(), true).await;
        }
        (true, None) => audit(api, event()).await,
        // Found made: perhaps by this caller's try whose answer was lost.
        (false, Some(Stamp { at, by, unset })) => {
            record_late(api, origin, caller, op.action(), at, by, unset, r, now).await;
        }
        // No stamp tells when a token was enabled.
        (false, None) => {}
    }
    // Revoking the value a rotation made ends the overlap of the value it
    // replaced: also when this call found it revoked already, so a retry
    // after a failure here ends it.
    if op == Change::Revoke {
        end_overlaps(api, caller, origin, &stored.record, now).await?;
    }
    Ok(Reply(
        StatusCode::OK,
        TokenAnswer {
            token: TokenView::of(&stored.record, now),
        },
    ))
}

/// Revokes now every value the rotations of the revoked token `revoked`
/// replaced whose overlap still runs (see [`store::end_overlaps`]), each
/// with its own audit event; a value the caller may not act on is left as
/// it is. In a task of its own, awaited: a caller gone mid-walk (its
/// handler dropped) leaves no value ended without its event.
pub(super) async fn end_overlaps(
    api: &Arc<AdminState>,
    caller: &Caller,
    origin: &Origin,
    revoked: &TokenRecord,
    now: Timestamp,
) -> Result<(), ApiError> {
    let (api, caller, origin) = (api.clone(), caller.clone(), origin.clone());
    let revoked = revoked.clone();
    tokio::spawn(async move { end_overlaps_now(&api, &caller, &origin, &revoked, now).await })
        .await
        .map_err(ApiError::fault)?
}

async fn end_overlaps_now(
    api: &AdminState,
    caller: &Caller,
    origin: &Origin,
    revoked: &TokenRecord,
    now: Timestamp,
) -> Result<(), ApiError> {
    let policy = api.policy();
    let by = caller.label();
    let walk = store::end_overlaps(&*api.cache, revoked, &by, now, |r| {
        caller.may_act_on(&policy, r)
    })
    .await;
    for (ended, at, first) in walk.to_record(now) {
        let r = &ended.after.record;
        if first {
            tracing::info!(
                target: "hawzu_gate::admin",
                op = "revoke",
                token_id = %r.id,
                rotated_to = %ended.successor,
                workspace_id = %r.workspace_id,
                by = %by,
                "token revoked: the overlap of its rotation ended with a later value's revocation"
            );
        }
        // Under the revoke's claim: a `DELETE` of it by this caller later
        // finds its event.
        let time = if first { now } else { at };
        let event = AuditEvent::changed(Action::Revoke, origin, time, &ended.before, r);
        record_stamped(api, Action::Revoke, at, &by, event, first).await;
    }
    match walk.cut {
        // A retry (found revoked, the walk runs again) goes on from there.
        Some(Cut::Store(_, e)) => Err(ApiError::store(e)),
        // `store.retention` is at least `admin.max_rotation_overlap`, so a
        // value dropped after it ends no overlap still running; its id's
        // index lost (a Redis eviction) would: said here.
        Some(Cut::NotFound(id)) => {
            tracing::info!(
                target: "hawzu_gate::admin",
                token_id = %id,
                revoked = %revoked.id,
                "a value of a revoked token's chain of rotations is not found by id (dropped after store.retention, or its index lost): the values before it were not looked at"
            );
            Ok(())
        }
        // Logged by the walk.
        Some(Cut::TooLong(_) | Cut::Cycle(_)) | None => Ok(()),
    }
}

/// Whether the disable of `r` is the admin key's: by it, or of unknown
/// origin (written before `disabled_by` was recorded).
fn disabled_by_admin(r: &TokenRecord) -> bool {
    r.disabled_by.as_deref().is_none_or(|by| by == ADMIN_LABEL)
}

/// A timestamp as the admin API writes it: whole milliseconds, as the list
/// index orders them. (States are judged at the precise instant.)
pub(super) fn stamp(now: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now)
}

/// The state changes of an existing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Disable,
    Enable,
    Revoke,
}

/// What a disable or revoke leaves on a record ([`Change::stamp`]).
struct Stamp<'a> {
    at: Option<Timestamp>,
    by: Option<&'a str>,
    unset: TokenRecord,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Disable => "disable",
            Change::Enable => "enable",
            Change::Revoke => "revoke",
        }
    }

    fn action(self) -> Action {
        match self {
            Change::Disable => Action::Disable,
            Change::Enable => Action::Enable,
            Change::Revoke => Action::Revoke,
        }
    }

    /// The stamp this change leaves on `r` — when, and by whom — and `r`
    /// with it unset; `None` for an enable, which leaves none.
    fn stamp(self, r: &TokenRecord) -> Option<Stamp<'_>> {
        match self {
            Change::Disable => Some(Stamp {
                at: r.disabled_at,
                by: r.disabled_by.as_deref(),
                unset: TokenRecord {
                    disabled_at: None,
                    disabled_by: None,
                    ..r.clone()
                },
            }),
            Change::Revoke => Some(Stamp {
                at: r.revoked_at,
                by: r.revoked_by.as_deref(),
                unset: TokenRecord {
                    revoked_at: None,
                    revoked_by: None,
                    ..r.clone()
                },
            }),
            Change::Enable => None,
        }
    }

    fn past_tense(self) -> &'static str {
        match self {
            Change::Disable => "disabled",
            Change::Enable => "enabled",
            Change::Revoke => "revoked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        let uri: http::Uri = format!("/admin/v1/tokens?{query}").parse().unwrap();
        Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .unwrap()
            .0
    }

    #[test]
    fn query_strings_are_percent_decoded() {
        assert_eq!(
            pairs("workspace=ws%5F1&state=enabled&x"),
            vec![
                ("workspace".into(), "ws_1".into()),
                ("state".into(), "enabled".into()),
                ("x".into(), String::new())
            ]
        );
        assert_eq!(pairs("a=a%2")[0].1, "a%2");
        assert_eq!(pairs("a=%zz")[0].1, "%zz");
        assert_eq!(pairs("a=a+b")[0].1, "a b");
    }
}
