//! The audit log in the admin API: [`record`], which every handler that
//! changed a token calls once its change succeeded, and
//! `GET /admin/v1/audit` ([`list`]), newest first with a cursor.
//!
//! A change is answered as it happened even when its event cannot be
//! written (docs/design.md § Decisions): the event then goes to the error
//! log whole, and `hawzu_gate_audit_events_total{result="failed"}` counts
//! it. Events hold public fields only (`crate::audit`), never a secret. A
//! token caller reads only its own workspace's events, of the tokens it
//! may act on (`Caller::may_reach`, as a token list shows it), and the
//! client address and request id only of its own workspace's tokens'
//! changes.

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use http::StatusCode;
use jiff::{SignedDuration, Timestamp};

use crate::audit::{
    Action, AuditEvent, AuditQuery, DEFAULT_PAGE, MAX_PAGE, Origin, Position, Visible, late_repeat,
};

use crate::store::{AuditLog, TokenStore};
use crate::token::{FieldErrors, TokenId, TokenRecord};

use super::caller::{Caller, Reach};
use super::error::{ApiError, field};
use super::extract::Reply;
use super::state::AdminState;
use super::wire::AuditAnswer;

/// Writes `event` to the audit log (through the cache, as every admin
/// change is; see `cache::audit`): counted, shipped on the log target
/// `hawzu_gate::audit`, and never failing the change it describes.
pub(super) async fn record(api: &AdminState, event: AuditEvent) {
    // In a task of its own: a client gone meanwhile does not cut it short.
    let cache = api.cache.clone();
    let _ = tokio::spawn(async move { cache.record_audit(event).await }).await;
}

/// Writes the event of a change that stamped `at` by `by` once across a
/// fleet ([`TokenCache::record_change`](crate::cache::TokenCache::record_change)),
/// in a task of its own, so that a client gone between the claim and the
/// event cannot leave the claim without its event.
pub(super) async fn record_stamped(
    api: &AdminState,
    stamp: Action,
    at: Timestamp,
    by: &str,
    event: AuditEvent,
    first: bool,
) {
    let (cache, by) = (api.cache.clone(), by.to_owned());
    let _ = tokio::spawn(async move {
        cache.record_change(stamp, at, &by, event, first).await;
    })
    .await;
}

/// A change that a repeat found made already: its state stamped `at`, by
/// `by`. If it may be this caller's try whose answer was lost
/// ([`late_repeat`]), its event is written now under the change's claim
/// ([`record_stamped`]): once, whichever of the two writes it, with the
/// change's own time and `before` as the change found the record as far
/// as the record still tells (the stamp and its author unset).
#[allow(clippy::too_many_arguments)] // one change's facts, each needed
pub(super) async fn record_late(
    api: &AdminState,
    origin: &Origin,
    caller: &Caller,
    action: Action,
    at: Option<Timestamp>,
    by: Option<&str>,
    before: TokenRecord,
    after: &TokenRecord,
    now: Timestamp,
) {
    let label = caller.label();
    let Some(at) = at.filter(|_| late_repeat(at, by, &label, now)) else {
        return;
    };
    let event = AuditEvent::changed(action, origin, at, &before, after);
    record_stamped(api, action, at, &label, event, false).await;
}

/// How many other managers' records one audit page reads, at most, to
/// judge whether their addresses are shown (two store reads each).
const ACTORS_JUDGED: usize = 32;

/// `GET /admin/v1/audit?token=&workspace=&since=&limit=&cursor=`: one page
/// of events, newest first. Each parameter at most once; every faulty one
/// is named.
pub async fn list(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Reply<AuditAnswer>, ApiError> {
    let Query(pairs) = query.map_err(|e| {
        ApiError::bad_request(
            "The audit query cannot be read.",
            field("query", e.body_text()),
        )
    })?;
    let mut q = parse(pairs, Timestamp::now())?;
    if let Some(own) = caller.workspace() {
        match &q.workspace {
            Some(ws) if ws != own => {
                return Err(ApiError::forbidden(format!(
                    "This token manages workspace `{own}` only."
                )));
            }
            _ => q.workspace = Some(own.to_owned()),
        }
    }
    // A token caller sees the events of the tokens it may act on, as in a
    // token list (an event without a scope: none) — judged while the log
    // is read, so that its pages fill with them and each cursor is one of
    // them (the position of an event it may not see told when a token
    // above it changed); only a walk that ends on the scan bound hands
    // back the last position it looked at, and that walk is its own
    // workspace's index (the store reads a query with a workspace there):
    // never another tenant's event.
    if let Caller::Token { .. } = caller {
        let policy = api.policy();
        let caller = caller.clone();
        q.visible = Visible::only(move |e| {
            e.scope.as_ref().is_some_and(|scope| {
                caller
                    .may_reach(
                        &policy,
                        &e.workspace_id,
                        scope,
                        Some(&e.token_id),
                        Reach::Existing,
                    )
                    .is_ok()
            })
        });
    }
    let mut page = api
        .cache
        .store()
        .audit_page(&q)
        .await
        .map_err(ApiError::store)?;
    if let Caller::Token { id: own, .. } = &caller {
        // The operator's address and request id (the admin key) and a
        // leak reporter's are not a tenant's to read; a manager's are to
        // the managers that may act on it (itself, or one above its role),
        // as its record and usage are: a narrower manager does not learn
        // where a workspace manager works from. Each actor judged once a
        // page, on its record now (a dropped one: not shown).
        let policy = api.policy();
        let mut judged: std::collections::HashMap<String, bool> = Default::default();
        for e in &mut page.events {
            let shown = match e.actor.strip_prefix("token:") {
                None => false,
                Some(actor) if actor == own => true,
                Some(actor) => match judged.get(actor) {
                    Some(&shown) => shown,
                    // Bounded work a page: the actors past the first
                    // ACTORS_JUDGED are not shown.
                    None if judged.len() >= ACTORS_JUDGED => false,
                    None => {
                        let shown = match TokenId::parse(actor) {
                            Ok(id) => match api.cache.find(&id).await {
                                Ok(found) => found
                                    .is_some_and(|s| caller.may_act_on(&policy, &s.record).is_ok()),
                                // Not shown, and the page still is: an
                                // address is never the price of an answer.
                                Err(e) => {
                                    tracing::warn!(
                                        target: "hawzu_gate::admin",
                                        error = %e,
                                        actor,
                                        "an audit event's actor could not be read: its address is not shown"
                                    );
                                    false
                                }
                            },
                            Err(_) => false,
                        };
                        judged.insert(actor.to_owned(), shown);
                        shown
                    }
                },
            };
            if !shown {
                e.client = None;
                e.request_id = None;
            }
        }
    }
    Ok(Reply(
        StatusCode::OK,
        AuditAnswer {
            events: page.events,
            next_cursor: page.next.map(|p| p.to_string()),
        },
    ))
}

/// The query of `pairs` (percent-decoded, in order), judged at `now`.
fn parse(pairs: Vec<(String, String)>, now: Timestamp) -> Result<AuditQuery, ApiError> {
    let mut q = AuditQuery {
        token: None,
        workspace: None,
        since: None,
        cursor: None,
        limit: DEFAULT_PAGE,
        visible: Visible::all(),
    };
    let mut errors = FieldErrors::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in pairs {
        if !seen.insert(k.clone()) {
            errors.insert(k, "is given more than once".into());
            continue;
        }
        let fault = match k.as_str() {
            "token" => TokenId::parse(&v)
                .map(|t| q.token = Some(t))
                .map_err(|_| "must be a token id (tok_ and 16 letters or digits)".to_owned()),
            "workspace" if crate::token::record::valid_id(&v) => {
                q.workspace = Some(v);
                Ok(())
            }
            "workspace" => Err("must be 1-64 characters of A-Z, a-z, 0-9, `_` and `-`".into()),
            "since" => since(&v, now).map(|t| q.since = Some(t)),
            "cursor" => v
                .parse::<Position>()
                .map(|p| q.cursor = Some(p))
                .map_err(|_| "is not a next_cursor from a previous page".into()),
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => {
                    q.limit = n;
                    Ok(())
                }
                _ => Err(format!("must be a number from 1 to {MAX_PAGE}")),
            },
            _ => Err("is not a parameter; use token, workspace, since, limit, cursor".into()),
        };
        if let Err(why) = fault {
            errors.insert(k, why);
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::bad_request(
            "The audit query has invalid parameters; see `fields`.",
            errors,
        ));
    }
    Ok(q)
}

/// `since`: an RFC 3339 instant (`2026-12-01T00:00:00Z`), a date (00:00
/// UTC that day), or a length of time back from `now` (`30min`, `24h`,
/// `7d`, `2w`, `1mo`; a bare `m` is refused).
fn since(v: &str, now: Timestamp) -> Result<Timestamp, String> {
    const HELP: &str = "write an RFC 3339 instant (2026-12-01T00:00:00Z), a date (2026-12-01, 00:00 UTC) or a time back from now (30min, 24h, 7d, 2w, 1mo)";
    if let Ok(t) = v.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Ok(d) = v.parse::<jiff::civil::Date>() {
        return d
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| format!("`{v}`: {e}"));
    }
    if v.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        let spelled = months_spelled(v)?;
        return humantime::parse_duration(&spelled)
            .ok()
            .and_then(|d| SignedDuration::try_from(d).ok())
            .and_then(|d| now.checked_sub(d).ok())
            .ok_or_else(|| format!("`{v}` cannot be read; {HELP}"));
    }
    Err(format!("`{v}` cannot be read; {HELP}"))
}

/// `v` with each `mo` unit written as humantime's `M` (a month); a bare
/// `m` is refused, as in expiries: a minute or a month?
fn months_spelled(v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut unit = String::new();
    let flush = |unit: &mut String, out: &mut String| -> Result<(), String> {
        match unit.as_str() {
            "m" => {
                return Err(format!(
                    "`{v}`: 1m, a minute or a month? write 1min for minutes, 1mo for months"
                ));
            }
            "mo" => out.push('M'),
            u => out.push_str(u),
        }
        unit.clear();
        Ok(())
    };
    for c in v.chars() {
        if c.is_ascii_alphabetic() {
            unit.push(c);
        } else {
            flush(&mut unit, &mut out)?;
            out.push(c);
        }
    }
    flush(&mut unit, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn fields(e: ApiError) -> Vec<String> {
        match e {
            ApiError::BadRequest { fields, .. } => fields.into_keys().collect(),
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn since_reads_instants_dates_and_times_back() {
        let now: Timestamp = "2026-12-04T16:00:00Z".parse().unwrap();
        let at = |v: &str| since(v, now).unwrap().to_string();
        assert_eq!(at("7d"), "2026-11-27T16:00:00Z");
        assert_eq!(at("24h"), "2026-12-03T16:00:00Z");
        assert_eq!(at("30min"), "2026-12-04T15:30:00Z");
        assert_eq!(at("1h30min"), "2026-12-04T14:30:00Z");
        assert!(since("1mo", now).unwrap() < since("29d", now).unwrap());
        let minute_or_month = since("1m", now).unwrap_err();
        assert!(minute_or_month.contains("1mo"), "{minute_or_month}");
        assert_eq!(at("2026-12-01"), "2026-12-01T00:00:00Z");
        assert_eq!(at("2026-12-01T10:00:00+01:00"), "2026-12-01T09:00:00Z");
        for bad in ["yesterday", "7x", "", "2026-13-01"] {
            assert!(since(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let now = Timestamp::now();
        let e = parse(
            pairs(&[
                ("token", "tok_short"),
                ("workspace", "ws 1"),
                ("since", "soon"),
                ("limit", "0"),
                ("cursor", "abc"),
                ("colour", "red"),
            ]),
            now,
        )
        .unwrap_err();
        assert_eq!(
            fields(e),
            ["colour", "cursor", "limit", "since", "token", "workspace"]
        );
        let e = parse(pairs(&[("limit", "5"), ("limit", "6")]), now).unwrap_err();
        assert_eq!(fields(e), ["limit"]);
        let q = parse(
            pairs(&[("cursor", "1733330000000-2"), ("limit", "500")]),
            now,
        )
        .unwrap();
        assert_eq!((q.cursor.unwrap().seq, q.limit), (2, 500));
    }
}
