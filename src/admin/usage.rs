//! Usage per token in the admin API: `GET /admin/v1/tokens/{id}/usage`
//! (hourly buckets, totals, recent clients, last refusal) and the
//! `requests_7d` of a token list. Reads only: usage is written by the
//! gate's usage writer, never here.
//!
//! The caller is checked against the token like every action on one
//! (`Caller::may_act_on`): a token caller sees the usage of what it may
//! reach, and 404 for tokens of other workspaces.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use http::StatusCode;
use jiff::{SignedDuration, Timestamp};

use crate::store::TokenStore;
use crate::store::usage::{Counts, RECENT_DAYS, UsageStore, day_of_hour, hour_of, hour_start};
use crate::token::{FieldErrors, TokenRecord};

use super::caller::Caller;
use super::error::{ApiError, field};
use super::extract::{PathId, Reply};
use super::state::AdminState;
use super::wire::{ClientView, HourUsage, RefusalView, RequestCounts, UsageAnswer};

/// The window of a usage query without `since`.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A length of time in a query (`since`, `unused`): `7d`, `24h`, `2w`, at
/// least an hour and at most `max`, which `bound` names in a refusal.
pub fn parse_window(
    name: &str,
    v: &str,
    max: Duration,
    bound: &str,
) -> Result<Duration, FieldErrors> {
    let d = humantime::parse_duration(v).map_err(|_| {
        field(
            name,
            format!("`{v}` is not a length of time; write it like 24h, 7d or 2w"),
        )
    })?;
    if d < Duration::from_secs(3600) || d > max {
        return Err(field(
            name,
            format!(
                "must be from 1h to {} ({bound})",
                crate::config::short_duration(max)
            ),
        ));
    }
    Ok(d)
}

fn counts(c: Counts) -> RequestCounts {
    RequestCounts {
        allowed: c.allowed,
        refused: c.refused,
    }
}

/// `GET /admin/v1/tokens/{id}/usage?since=7d`.
pub async fn usage(
    State(api): State<Arc<AdminState>>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Reply<UsageAnswer>, ApiError> {
    let now = Timestamp::now();
    let Query(pairs) = query.map_err(|e| {
        ApiError::bad_request(
            "The usage query cannot be read.",
            field("query", e.body_text()),
        )
    })?;
    let mut since = DEFAULT_SINCE.min(api.usage_retention);
    let mut errors = FieldErrors::new();
    let mut seen = false;
    for (k, v) in pairs {
        match k.as_str() {
            "since" if seen => {
                errors.insert(k, "is given more than once".into());
            }
            "since" => {
                seen = true;
                match parse_window("since", &v, api.usage_retention, "usage.retention") {
                    Ok(d) => since = d,
                    Err(e) => errors.extend(e),
                }
            }
            _ => {
                errors.insert(k, "is not a parameter; use since".into());
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::bad_request(
            "The usage query has invalid parameters; see `fields`.",
            errors,
        ));
    }
    let stored = api
        .cache
        .find(&id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(id.as_str()))?;
    caller.may_act_on(&api.policy(), &stored.record)?;

    let start = SignedDuration::try_from(since)
        .ok()
        .and_then(|d| now.checked_sub(d).ok())
        .unwrap_or(now);
    let (first, last) = (hour_of(start), hour_of(now));
    let report = api
        .cache
        .store()
        .usage(&id, first, last)
        .await
        .map_err(ApiError::store)?;
    let mut totals = Counts::default();
    let hours = report
        .hours
        .iter()
        .map(|(h, c)| {
            totals.add(*c);
            HourUsage {
                hour: hour_start(*h),
                allowed: c.allowed,
                refused: c.refused,
            }
        })
        .collect();
    Ok(Reply(
        StatusCode::OK,
        UsageAnswer {
            token_id: id,
            since: hour_start(first),
            until: now,
            totals: counts(totals),
            hours,
            // Kept `usage.retention` at most, whatever a store still
            // holds (the embedded file prunes hourly).
            clients: report
                .clients
                .into_iter()
                .filter(|c| {
                    SignedDuration::try_from(api.usage_retention)
                        .ok()
                        .and_then(|r| now.checked_sub(r).ok())
                        .is_none_or(|oldest| c.last_seen >= oldest)
                })
                .map(|c| ClientView {
                    address: c.address,
                    user_agent: c.user_agent,
                    first_seen: c.first_seen,
                    last_seen: c.last_seen,
                })
                .collect(),
            last_refusal: report.last_refusal.map(|r| RefusalView {
                code: r.code,
                at: r.at,
            }),
        },
    ))
}

/// Each record's requests today (UTC) and in the six days before, read in
/// one go; `None` for all when usage cannot be read (the list still
/// answers).
pub async fn recent_requests(
    api: &AdminState,
    records: &[&TokenRecord],
    now: Timestamp,
) -> Vec<Option<RequestCounts>> {
    let ids: Vec<_> = records.iter().map(|r| r.id.clone()).collect();
    let today = day_of_hour(hour_of(now));
    match api
        .cache
        .store()
        .daily_totals(&ids, today.saturating_sub(RECENT_DAYS - 1), today)
        .await
    {
        Ok(all) if all.len() == ids.len() => all.into_iter().map(|c| Some(counts(c))).collect(),
        Ok(_) => vec![None; ids.len()],
        Err(e) => {
            tracing::warn!(error = %e, "usage of listed tokens not read; requests_7d is null");
            vec![None; ids.len()]
        }
    }
}
