//! The token record: what the gate knows about a token, and the validation
//! of a request to create one.
//!
//! The record never holds the secret or anything derived from it; the store
//! keys it by the hash. Validation answers with every faulty field at once.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::context::{self, ContextLimits};
use super::expiry::{EXPIRY_HELP, ExpirySpec};
use super::value::TokenId;
use crate::policy::Policy;
use crate::policy::net::IpNet;
use crate::policy::roles::{RoleScope, Roles};

/// Record format version written in every record without context limits.
pub const RECORD_VERSION: u32 = 1;
/// Record format version written when a record has context limits
/// (`allow_from`, `not_before`): a gate that predates them refuses to read
/// such a record (its token gets `store_unavailable`, fail closed) instead
/// of ignoring a limit it does not know. Both versions are read.
pub const RECORD_VERSION_LIMITS: u32 = 2;
/// Longest token name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 128;
pub use crate::policy::ids::{MAX_ID_LEN, valid_id};
/// Most projects one token may be linked to.
pub const MAX_PROJECTS: usize = 256;

/// A stored token, as JSON with `"v": 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub v: u32,
    pub id: TokenId,
    pub name: String,
    /// What the token is for, in the owner's words; absent when none was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub workspace_id: String,
    pub scope: Scope,
    pub created_by: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub disabled_at: Option<Timestamp>,
    /// Who disabled the token (`admin`, or `token:<id>`); absent while
    /// enabled. A disable by the admin key is undone only by the admin key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_by: Option<String>,
    /// When the token stops (or stopped) working for good. A future instant
    /// is a rotation with an overlap — the old value works until then —
    /// only while `rotated_to` is set and `revoked_by` is not: see
    /// [`TokenRecord::refused_from`].
    pub revoked_at: Option<Timestamp>,
    /// Who revoked the token at once (`admin`, `token:<id>`, `leaks:github`,
    /// `leaks:public`; a rotation without an overlap: its caller); absent
    /// while not revoked, and for a rotation's overlap, which ends by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    pub last_used_at: Option<Timestamp>,
    pub rotated_from: Option<TokenId>,
    /// The successor of a rotated token; absent until rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<TokenId>,
    /// The client networks the token may be used from; empty (and absent
    /// in JSON): anywhere. See `token::context`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<IpNet>,
    /// The token is refused before this instant (`token_not_yet_valid`);
    /// absent: valid from creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// Who set the context limits (`admin`, `token:<id>`); absent without
    /// limits. Limits the admin key set — or set before this was recorded
    /// — are lifted only by the admin key (`admin::change::update_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_by: Option<String>,
}

/// What a token may reach: one workspace role, or one role per project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Scope {
    Workspace { role: String },
    Project { projects: Vec<ProjectGrant> },
}

/// One project of a project token and the role it has there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectGrant {
    pub project_id: String,
    pub role: String,
}

/// The kind of a token, as shown in lists and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Workspace,
    Project,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Workspace => "workspace",
            TokenKind::Project => "project",
        }
    }
}

impl Scope {
    pub fn kind(&self) -> TokenKind {
        match self {
            Scope::Workspace { .. } => TokenKind::Workspace,
            Scope::Project { .. } => TokenKind::Project,
        }
    }
}

/// The state of a token at an instant. When several apply, the first in
/// this order wins, as in the decision path: revoked, disabled, expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    Enabled,
    Disabled,
    Expired,
    Revoked,
}

impl TokenState {
    pub const ALL: [TokenState; 4] = [
        TokenState::Enabled,
        TokenState::Disabled,
        TokenState::Expired,
        TokenState::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Enabled => "enabled",
            TokenState::Disabled => "disabled",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl TokenRecord {
    /// The state at `now`: an expiry or a revocation is effective at its
    /// exact instant.
    pub fn state(&self, now: Timestamp) -> TokenState {
        if self.is_revoked_at(now) {
            TokenState::Revoked
        } else if self.disabled_at.is_some() {
            TokenState::Disabled
        } else if self.expires_at.is_some_and(|e| e <= now) {
            TokenState::Expired
        } else {
            TokenState::Enabled
        }
    }

    /// Whether the token is revoked at `now` (a rotation's overlap has a
    /// revocation still to come).
    pub fn is_revoked_at(&self, now: Timestamp) -> bool {
        self.refused_from().is_some_and(|r| r <= now)
    }

    /// The instant from which the token is refused as revoked, on any
    /// gate's clock: the end of a rotation's overlap, or — for a
    /// revocation made at once — the earliest instant there is, so that a
    /// gate whose clock lags the one that stamped `revoked_at` does not read
    /// it as an overlap still to run. At once: `revoked_by` set, or no
    /// successor (only a rotation writes a `revoked_at` to come).
    pub fn refused_from(&self) -> Option<Timestamp> {
        let at = self.revoked_at?;
        let at_once = self.revoked_by.is_some() || self.rotated_to.is_none();
        Some(if at_once { Timestamp::MIN } else { at })
    }

    /// The end of a rotation's overlap: the old value works until then.
    /// `None` when not rotated with an overlap, or once it ended.
    pub fn works_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.refused_from().filter(|r| *r > now)
    }

    /// Whether the record limits where or from when it may be used.
    pub fn has_context_limits(&self) -> bool {
        !self.allow_from.is_empty() || self.not_before.is_some()
    }

    /// Reads a stored record, refusing other format versions (and a version
    /// 1 record that carries context limits: they were never written so).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let rec: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        match rec.v {
            RECORD_VERSION if !rec.has_context_limits() => Ok(rec),
            RECORD_VERSION_LIMITS => Ok(rec),
            v => Err(format!("record format version {v} is not supported")),
        }
    }

    /// The stored form: version 2 when the record has context limits,
    /// else version 1 (readable by every gate).
    pub fn to_json(&self) -> Vec<u8> {
        let v = if self.has_context_limits() {
            RECORD_VERSION_LIMITS
        } else {
            RECORD_VERSION
        };
        let out = if v == self.v {
            serde_json::to_vec(self)
        } else {
            serde_json::to_vec(&Self { v, ..self.clone() })
        };
        // A record is plain data (strings, timestamps): serializing cannot fail.
        out.unwrap_or_default()
    }
}

// === create requests ===

/// The body of a create request (`POST /admin/v1/tokens`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: Option<String>,
    /// Optional: what the token is for (at most 1024 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub workspace_id: Option<String>,
    pub scope: Option<Scope>,
    /// A length (`7d`, `3mo`, `1y`…), `never`, or a date or RFC 3339 instant;
    /// see [`ExpirySpec::parse_api`].
    pub expires: Option<String>,
    pub created_by: Option<String>,
    /// Optional: client networks the token may be used from (`10.0.0.0/8`,
    /// `2001:db8::/32`, a single address); absent or empty: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<Vec<String>>,
    /// Optional: the token is refused before this instant (an RFC 3339
    /// instant, a date, or a length from now such as `2d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
}

/// Field-level validation errors: field path → what would be accepted.
pub type FieldErrors = BTreeMap<String, String>;

/// A create request that passed validation, ready to become a record.
#[derive(Debug, Clone)]
pub struct ValidCreate {
    pub name: String,
    pub description: Option<String>,
    pub workspace_id: String,
    pub scope: Scope,
    pub expires_at: Option<Timestamp>,
    pub created_by: String,
    /// `allow_from` and `not_before`, checked.
    pub limits: ContextLimits,
}

impl CreateToken {
    /// Validates every field against `policy` (its roles and id pattern)
    /// at `now`.
    pub fn validate(&self, policy: &Policy, now: Timestamp) -> Result<ValidCreate, FieldErrors> {
        let roles = &policy.roles;
        let ids = &policy.ids;
        let mut errors = FieldErrors::new();
        let name = validate_text(self.name.as_deref(), "name", MAX_NAME_CHARS, &mut errors);
        let description = validate_description(self.description.as_deref(), &mut errors);
        let created_by = match self.created_by.as_deref() {
            None => Some("admin".to_owned()),
            some => validate_text(some, "created_by", MAX_NAME_CHARS, &mut errors),
        };

        match self.workspace_id.as_deref() {
            None => {
                errors.insert("workspace_id".into(), "is required".into());
            }
            Some(ws) if !ids.matches(ws) => {
                errors.insert("workspace_id".into(), ids.help(ws));
            }
            Some(_) => {}
        }

        match &self.scope {
            None => {
                errors.insert(
                    "scope".into(),
                    "is required: {\"type\":\"workspace\",\"role\":…} or {\"type\":\"project\",\"projects\":[…]}".into(),
                );
            }
            Some(Scope::Workspace { role }) => {
                check_role(roles, role, RoleScope::Workspace, "scope.role", &mut errors);
            }
            Some(Scope::Project { projects }) => {
                if projects.is_empty() {
                    errors.insert(
                        "scope.projects".into(),
                        "a project token needs at least one project".into(),
                    );
                }
                if projects.len() > MAX_PROJECTS {
                    errors.insert(
                        "scope.projects".into(),
                        format!("at most {MAX_PROJECTS} projects per token"),
                    );
                }
                let mut seen = HashSet::new();
                for (i, grant) in projects.iter().enumerate() {
                    let field = format!("scope.projects[{i}].project_id");
                    if !ids.matches(&grant.project_id) {
                        errors.insert(field, ids.help(&grant.project_id));
                    } else if !seen.insert(grant.project_id.as_str()) {
                        errors.insert(
                            field,
                            format!(
                                "project `{}` is listed twice; give each project once",
                                grant.project_id
                            ),
                        );
                    }
                    let field = format!("scope.projects[{i}].role");
                    check_role(roles, &grant.role, RoleScope::Project, &field, &mut errors);
                }
            }
        }

        let expires_at = match self.expires.as_deref() {
            None => {
                errors.insert("expires".into(), format!("is required; use {EXPIRY_HELP}"));
                None
            }
            Some(s) => match ExpirySpec::parse_api(s).and_then(|spec| spec.resolve(now)) {
                Ok(at) => at,
                Err(e) => {
                    errors.insert("expires".into(), e.to_string());
                    None
                }
            },
        };

        // Governance (`[tokens]`): the longest lifetime and the highest role
        // for the workspace, each refusal naming its limit.
        if let Some(ws) = self.workspace_id.as_deref() {
            let gov = &policy.governance;
            if !errors.contains_key("expires")
                && let Err(why) = gov.check_expiry(ws, expires_at, now)
            {
                errors.insert("expires".into(), why);
            }
            let roles_of: Vec<(String, &str)> = match &self.scope {
                Some(Scope::Workspace { role }) => vec![("scope.role".into(), role.as_str())],
                Some(Scope::Project { projects }) => projects
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (format!("scope.projects[{i}].role"), g.role.as_str()))
                    .collect(),
                None => Vec::new(),
            };
            for (field, role) in roles_of {
                if !errors.contains_key(&field)
                    && let Err(why) = gov.check_role(roles, ws, role)
                {
                    errors.insert(field, why);
                }
            }
        }

        let limits = context::validate(
            self.allow_from.as_deref(),
            self.not_before.as_deref(),
            expires_at,
            now,
            &mut errors,
        );

        match (name, created_by, &self.workspace_id, &self.scope) {
            (Some(name), Some(created_by), Some(ws), Some(scope)) if errors.is_empty() => {
                Ok(ValidCreate {
                    name,
                    description: description.flatten(),
                    workspace_id: ws.clone(),
                    scope: scope.clone(),
                    expires_at,
                    created_by,
                    limits,
                })
            }
            _ => Err(errors),
        }
    }
}

/// Longest description, in characters, after trimming.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// An optional description: `Some(None)` when absent or empty after
/// trimming (no description), `None` when refused (an error is recorded).
pub(crate) fn validate_description(
    value: Option<&str>,
    errors: &mut FieldErrors,
) -> Option<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Some(None),
        Some(text) => {
            validate_text(Some(text), "description", MAX_DESCRIPTION_CHARS, errors).map(Some)
        }
    }
}

pub(crate) fn validate_text(
    value: Option<&str>,
    field: &str,
    max_chars: usize,
    errors: &mut FieldErrors,
) -> Option<String> {
    let Some(value) = value else {
        errors.insert(field.into(), "is required".into());
        return None;
    };
    let trimmed = value.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > max_chars {
        errors.insert(
            field.into(),
            format!("must be 1-{max_chars} characters after trimming (got {chars})"),
        );
        return None;
    }
    if trimmed.chars().any(char::is_control) {
        errors.insert(field.into(), "must not contain control characters".into());
        return None;
    }
    // A list could show a name other than the stored one ("Trojan Source").
    if trimmed.chars().any(crate::redact::is_bidi_control) {
        errors.insert(
            field.into(),
            "must not contain bidirectional control characters (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069): they make a name read differently from what it is".into(),
        );
        return None;
    }
    // Nor one that looks like another: characters that show nothing, or
    // break the line where the name is shown. (The joiners scripts and
    // emoji need, U+200C and U+200D, stay.)
    if trimmed.chars().any(invisible_or_separator) {
        errors.insert(
            field.into(),
            "must not contain invisible or line-separator characters (U+00AD, U+034F, Hangul fillers U+115F, U+1160, U+3164, U+FFA0, U+180E, U+200B, U+2028, U+2029, U+2060-U+206F, U+FEFF, U+FFF9-U+FFFB, U+1D173-U+1D17A, tags U+E0000-U+E007F): two names would look the same".into(),
        );
        return None;
    }
    Some(trimmed.to_owned())
}

/// A character that shows nothing where a name is shown, or breaks its
/// line.
fn invisible_or_separator(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206A}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

fn check_role(roles: &Roles, role: &str, kind: RoleScope, field: &str, errors: &mut FieldErrors) {
    let kind_name = if kind == RoleScope::Workspace {
        "workspace"
    } else {
        "project"
    };
    let msg = match roles.get(role) {
        Some(r) if r.scope.allows(kind) => return,
        Some(_) => format!("`{role}` is not a {kind_name} role"),
        None => format!("unknown role `{role}`"),
    };
    let accepted = roles.names_for(kind).join(", ");
    errors.insert(
        field.into(),
        format!("{msg}; {kind_name} roles are: {accepted}"),
    );
}

/// A token for unit tests: live, in `ws_1`, made by `alice` at `created_at`,
/// never expiring, with nothing else set.
#[cfg(test)]
impl TokenRecord {
    pub(crate) fn sample(scope: Scope, created_at: Timestamp) -> Self {
        Self {
            v: RECORD_VERSION,
            id: TokenId::generate().expect("the OS gives random bytes"),
            name: "CI".into(),
            workspace_id: "ws_1".into(),
            scope,
            created_by: "alice".into(),
            created_at,
            expires_at: None,
            disabled_at: None,
            disabled_by: None,
            revoked_at: None,
            revoked_by: None,
            last_used_at: None,
            rotated_from: None,
            description: None,
            rotated_to: None,
            allow_from: Vec::new(),
            not_before: None,
            limits_by: None,
        }
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
