//! Requests that change an existing token — rotate (`POST …/rotate`) and
//! update (`PATCH /admin/v1/tokens/{id}`) — and their validation against
//! the record they change. Pure data and rules, no I/O: the admin API runs
//! these inside the compare-and-set that writes the record.
//!
//! Rotate: the successor's expiry (default: the old token's), an optional
//! overlap during which the old value still works (capped), and a grace
//! period after expiry within which an expired token may still be rotated.
//! Update: name, description and a shorter expiry only; a token's scope and
//! workspace never change.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::context;
use super::expiry::{EXPIRY_HELP, ExpirySpec};
use super::record::{
    FieldErrors, MAX_NAME_CHARS, TokenRecord, validate_description, validate_text,
};
use super::value::TokenId;

/// The body of `POST /admin/v1/tokens/{id}/rotate` (may be empty).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    /// The successor's expiry, as at create; absent: the old token's expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// How long the old value keeps working (`24h`, `3d`); absent: it stops
    /// at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
}

/// The limits of rotation (`admin.max_rotation_overlap`,
/// `admin.rotate_after_expiry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationLimits {
    pub max_overlap: Duration,
    pub after_expiry: Duration,
}

impl Default for RotationLimits {
    fn default() -> Self {
        const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
        Self {
            max_overlap: WEEK,
            after_expiry: WEEK,
        }
    }
}

/// Why a change was refused: the token's state (409) or a field (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRefusal {
    /// `code` and message of a state that forbids the change.
    State {
        code: &'static str,
        message: String,
    },
    Fields(FieldErrors),
}

fn one(field: &str, msg: impl Into<String>) -> ChangeRefusal {
    ChangeRefusal::Fields(BTreeMap::from([(field.to_owned(), msg.into())]))
}

/// A rotate that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRotate {
    /// The successor's expiry.
    pub expires_at: Option<Timestamp>,
    /// Whether `expires` was given (a token caller's limit is then a field
    /// error, not a refusal of the rotate as such).
    pub expires_given: bool,
    /// When the old value stops: `now`, or the end of the overlap.
    pub old_until: Timestamp,
}

/// `24h`, `90m`, `3d`: a duration as in the config file.
fn parse_overlap(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write it like 30m, 24h or 3d (m is minutes here)")
    })
}

/// A duration as people read it: `7days`, `24h`.
fn human(d: Duration) -> String {
    super::short_duration(d)
}

impl RotateToken {
    /// Checks a rotate of `old` at `now` under `limits`: its state (revoked,
    /// already rotated, disabled, expired beyond the grace period) and the
    /// fields.
    pub fn validate(
        &self,
        old: &TokenRecord,
        limits: RotationLimits,
        now: Timestamp,
    ) -> Result<ValidRotate, ChangeRefusal> {
        if old.is_revoked_at(now) {
            return Err(ChangeRefusal::State {
                code: "token_revoked",
                message: "The token is revoked; create a new token instead.".into(),
            });
        }
        // Rotated already, its overlap still running. The same code as a
        // revoked token: the loser of concurrent rotates may see the
        // winner's revocation stamped a moment after its own clock read.
        if let (Some(to), Some(until)) = (&old.rotated_to, old.revoked_at) {
            return Err(ChangeRefusal::State {
                code: "token_revoked",
                message: format!(
                    "The token was already rotated to {to}; its value works until {until}. Rotate {to} instead."
                ),
            });
        }
        if old.disabled_at.is_some() {
            return Err(ChangeRefusal::State {
                code: "token_disabled",
                message: "The token is disabled; enable it before rotating it.".into(),
            });
        }
        let expired_at = old.expires_at.filter(|e| *e <= now);
        if let Some(at) = expired_at {
            let grace =
                SignedDuration::try_from(limits.after_expiry).unwrap_or(SignedDuration::MAX);
            if at.checked_add(grace).map_or(true, |end| end <= now) {
                return Err(ChangeRefusal::State {
                    code: "token_expired",
                    message: format!(
                        "The token expired at {at}, longer ago than admin.rotate_after_expiry ({}); create a new token instead.",
                        human(limits.after_expiry)
                    ),
                });
            }
        }

        let mut errors = FieldErrors::new();
        let expires_at = match self.expires.as_deref() {
            Some(s) => match ExpirySpec::parse_api(s).and_then(|spec| spec.resolve(now)) {
                Ok(at) => at,
                Err(e) => {
                    errors.insert("expires".into(), e.to_string());
                    None
                }
            },
            None => {
                if let Some(at) = expired_at {
                    errors.insert(
                        "expires".into(),
                        format!(
                            "is required: the token expired at {at}, so its successor needs a new expiry; use {EXPIRY_HELP}"
                        ),
                    );
                }
                old.expires_at
            }
        };
        // The successor keeps the old token's start: it must end after it.
        if let (Some(nb), Some(exp)) = (old.not_before, expires_at)
            && nb >= exp
            && !errors.contains_key("expires")
        {
            errors.insert(
                "expires".into(),
                format!("{exp:.0} is not after the token's not_before ({nb:.0}): the new token would never work"),
            );
        }
        let mut old_until = now;
        if let Some(s) = self.overlap.as_deref() {
            match parse_overlap(s) {
                Ok(d) if d > limits.max_overlap => {
                    errors.insert(
                        "overlap".into(),
                        format!(
                            "{} is longer than admin.max_rotation_overlap ({}); give at most that",
                            human(d),
                            human(limits.max_overlap)
                        ),
                    );
                }
                Ok(d) => match SignedDuration::try_from(d)
                    .ok()
                    .and_then(|d| now.checked_add(d).ok())
                {
                    Some(end) => old_until = end,
                    None => {
                        errors.insert("overlap".into(), "is out of range".into());
                    }
                },
                Err(why) => {
                    errors.insert("overlap".into(), why);
                }
            }
        }
        if !errors.is_empty() {
            return Err(ChangeRefusal::Fields(errors));
        }
        if expired_at.is_some() {
            // Its value is refused already: there is nothing to overlap.
            old_until = now;
        }
        Ok(ValidRotate {
            expires_at,
            expires_given: self.expires.is_some(),
            old_until,
        })
    }
}

/// The body of `PATCH /admin/v1/tokens/{id}`: any of `name`, `description`
/// (`""` clears it) and `expires` (earlier than now set). Every other field
/// is refused by name.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct UpdateToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The client networks the token may be used from, replacing the
    /// current list; `[]`: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<Vec<String>>,
    /// When the token starts to work; `""`: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Anything else, to be refused by name.
    #[serde(flatten, skip_serializing)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Fields of a token that an update may never touch, and why.
fn unchangeable(field: &str) -> String {
    match field {
        "scope" | "workspace_id" | "role" | "projects" => {
            "cannot be changed: an update never widens or moves a token's scope; create a new token for another scope".into()
        }
        "id" | "created_by" | "created_at" | "last_used_at" | "rotated_from" | "rotated_to"
        | "state" => "cannot be changed".into(),
        "expires_at" | "disabled_at" | "revoked_at" => {
            "cannot be set here; use expires, or disable, enable, revoke".into()
        }
        _ => "is not a field of an update; use name, description, expires, allow_from, not_before"
            .into(),
    }
}

impl UpdateToken {
    /// `record` with this update applied at `now`; `Ok(None)` when nothing
    /// changes.
    pub fn apply(
        &self,
        record: &TokenRecord,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, ChangeRefusal> {
        if record.is_revoked_at(now) {
            return Err(ChangeRefusal::State {
                code: "token_revoked",
                message: "The token is revoked; a revoked token cannot be changed.".into(),
            });
        }
        let mut errors: FieldErrors = self
            .other
            .keys()
            .map(|k| (k.clone(), unchangeable(k)))
            .collect();
        if self.name.is_none()
            && self.description.is_none()
            && self.expires.is_none()
            && self.allow_from.is_none()
            && self.not_before.is_none()
        {
            if errors.is_empty() {
                return Err(one(
                    "body",
                    "give at least one of name, description, expires, allow_from, not_before",
                ));
            }
            return Err(ChangeRefusal::Fields(errors));
        }
        let mut next = record.clone();
        if self.name.is_some()
            && let Some(name) =
                validate_text(self.name.as_deref(), "name", MAX_NAME_CHARS, &mut errors)
        {
            next.name = name;
        }
        if self.description.is_some()
            && let Some(d) = validate_description(self.description.as_deref(), &mut errors)
        {
            next.description = d;
        }
        if let Some(s) = self.expires.as_deref() {
            match ExpirySpec::parse_api(s).and_then(|spec| spec.resolve(now)) {
                Err(e) => {
                    errors.insert("expires".into(), e.to_string());
                }
                Ok(at) => match (record.expires_at, at) {
                    (Some(current), None) => {
                        errors.insert(
                            "expires".into(),
                            format!("can only be shortened: the token expires at {current}, and `never` is later"),
                        );
                    }
                    (Some(current), Some(at)) if at > current => {
                        errors.insert(
                            "expires".into(),
                            format!("can only be shortened: the token expires at {current}, and {at} is later"),
                        );
                    }
                    _ => next.expires_at = at,
                },
            }
        }
        if let Some(list) = &self.allow_from
            && let Some(nets) = context::parse_allow_from(list, &mut errors)
        {
            next.allow_from = nets;
        }
        match self.not_before.as_deref().map(str::trim) {
            None => {}
            Some("") => next.not_before = None,
            Some(s) => match context::parse_not_before(s, now) {
                Ok(at) => next.not_before = Some(at),
                Err(why) => {
                    errors.insert("not_before".into(), why);
                }
            },
        }
        if !errors.contains_key("not_before") && !errors.contains_key("expires") {
            context::check_window(next.not_before, next.expires_at, &mut errors);
        }
        if !errors.is_empty() {
            return Err(ChangeRefusal::Fields(errors));
        }
        Ok((next != *record).then_some(next))
    }
}

/// The successor of `old` for a valid rotate: a new id and value with the
/// old name, description, workspace and scope.
pub fn successor(
    old: &TokenRecord,
    id: TokenId,
    valid: &ValidRotate,
    created_by: String,
    now: Timestamp,
) -> TokenRecord {
    TokenRecord {
        id,
        created_by,
        created_at: now,
        expires_at: valid.expires_at,
        disabled_at: None,
        disabled_by: None,
        last_used_at: None,
        revoked_at: None,
        revoked_by: None,
        rotated_from: Some(old.id.clone()),
        rotated_to: None,
        ..old.clone()
    }
}

/// `old` with its rotation overlap ended at `now` by `by`, when it is the
/// predecessor of `successor` (revoked itself) and its old value still
/// works: revoking the value a rotation made revokes the value it
/// replaced. `None` when there is nothing to end.
pub fn overlap_ended(
    old: &TokenRecord,
    successor: &TokenId,
    by: String,
    now: Timestamp,
) -> Option<TokenRecord> {
    (old.rotated_to.as_ref() == Some(successor) && !old.is_revoked_at(now)).then(|| TokenRecord {
        revoked_at: Some(Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now)),
        revoked_by: Some(by),
        ..old.clone()
    })
}

#[cfg(test)]
#[path = "change_tests.rs"]
mod tests;
