//! The admin API's wire format: the JSON bodies of its requests and answers,
//! one `serde` struct each, used by the server (`admin::routes` and its
//! handlers) and by the CLI's client alike, so the two cannot drift.
//!
//! Plain data: no I/O, no HTTP, no decisions (the role table is read, to
//! show what a role grants). It never carries a secret except
//! in [`Created::secret`], the one answer that hands one out.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::policy::roles::{RoleScope, Roles};
use crate::token::{FieldErrors, Scope, TokenId, TokenRecord, TokenState};

/// The body of `POST /admin/v1/tokens`.
pub use crate::token::CreateToken as CreateRequest;
/// The body of `POST /admin/v1/tokens/{id}/rotate` (may be empty).
pub use crate::token::RotateToken as RotateRequest;
/// The body of `PATCH /admin/v1/tokens/{id}`.
pub use crate::token::UpdateToken as UpdateRequest;

/// Largest request body the admin API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// A token as the API shows it: the record's fields (not its format
/// version) and its `state` at the time of the answer. Times are RFC 3339
/// in UTC to the second ([`seconds`]), as every CLI output shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: TokenId,
    pub name: String,
    /// Absent when the token has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub workspace_id: String,
    pub scope: Scope,
    pub created_by: String,
    #[serde(with = "seconds")]
    pub created_at: Timestamp,
    #[serde(with = "seconds::option")]
    pub expires_at: Option<Timestamp>,
    #[serde(with = "seconds::option")]
    pub disabled_at: Option<Timestamp>,
    /// Absent while enabled (as in the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_by: Option<String>,
    /// When the token stops working for good; a future instant while a
    /// rotation's overlap lasts (the old value works until then).
    #[serde(with = "seconds::option")]
    pub revoked_at: Option<Timestamp>,
    /// Who revoked it at once; absent for a rotation's overlap (and while
    /// not revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(with = "seconds::option")]
    pub last_used_at: Option<Timestamp>,
    pub rotated_from: Option<TokenId>,
    /// The successor, once rotated; absent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<TokenId>,
    /// The client networks the token may be used from; absent: anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<String>,
    /// The token is refused before this instant; absent: from creation.
    #[serde(
        default,
        with = "seconds::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_before: Option<Timestamp>,
    /// Who set the limits (`admin`, `token:<id>`); absent without limits.
    /// Limits the admin key set are lifted only by the admin key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_by: Option<String>,
    pub state: TokenState,
    /// Requests today (UTC) and in the six days before: in a list only
    /// (`null` there when usage could not be read), absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_7d: Option<Option<RequestCounts>>,
}

impl TokenView {
    /// `record` as shown at `now`.
    pub fn of(record: &TokenRecord, now: Timestamp) -> Self {
        let r = record.clone();
        Self {
            state: record.state(now),
            id: r.id,
            name: r.name,
            description: r.description,
            workspace_id: r.workspace_id,
            scope: r.scope,
            created_by: r.created_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            disabled_at: r.disabled_at,
            disabled_by: r.disabled_by,
            revoked_at: r.revoked_at,
            revoked_by: r.revoked_by,
            last_used_at: r.last_used_at,
            rotated_from: r.rotated_from,
            rotated_to: r.rotated_to,
            allow_from: r.allow_from.iter().map(ToString::to_string).collect(),
            not_before: r.not_before,
            limits_by: r.limits_by,
            requests_7d: None,
        }
    }
}

/// Timestamps on the wire: RFC 3339 in UTC, to the second
/// (`2027-03-01T12:00:00Z`), whatever the record holds (milliseconds; an
/// expiry preset, nanoseconds). Shown times are truncated, never rounded
/// up: a shown expiry is never later than the real one. Reading accepts any
/// RFC 3339 instant.
pub mod seconds {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    /// `t` truncated to its second.
    pub fn truncate(t: Timestamp) -> Timestamp {
        Timestamp::from_second(t.as_second()).unwrap_or(t)
    }

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&truncate(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        Timestamp::deserialize(d)
    }

    /// The same for an optional time (`null` when there is none).
    pub mod option {
        use jiff::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.collect_str(&super::truncate(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            Option::<Timestamp>::deserialize(d)
        }
    }
}

/// The answer of show: the token and what it may do, per scope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShownToken {
    pub token: TokenView,
    /// One entry per scope: the workspace (a workspace token), or each
    /// project (a project token), in the token's order.
    pub permissions: Vec<ScopePermissions>,
}

/// What a token may do in one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopePermissions {
    /// `workspace` or `project`.
    pub scope: String,
    /// The project; `null` for the workspace scope.
    pub project_id: Option<String>,
    pub role: String,
    /// `resource:action`, in resource then action order. Empty when the
    /// role is no longer defined (then the token is refused everywhere).
    pub permissions: Vec<String>,
    /// False when the config no longer defines the role.
    pub role_defined: bool,
}

impl ScopePermissions {
    /// The permissions `scope` grants under `roles`, per scope.
    pub fn of(scope: &Scope, roles: &Roles) -> Vec<Self> {
        let one = |kind: &str, project: Option<&str>, role: &str| {
            let found = roles.get(role);
            Self {
                scope: kind.to_owned(),
                project_id: project.map(str::to_owned),
                role: role.to_owned(),
                permissions: found
                    .map(|r| {
                        r.permissions
                            .iter()
                            .map(|p| p.as_str().to_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
                role_defined: found.is_some(),
            }
        };
        match scope {
            Scope::Workspace { role } => vec![one("workspace", None, role)],
            Scope::Project { projects } => projects
                .iter()
                .map(|g| one("project", Some(&g.project_id), &g.role))
                .collect(),
        }
    }
}

/// The answer of `GET /admin/v1/roles`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolesAnswer {
    /// Built-in roles first (workspace, then project, each from viewer up),
    /// then the config's `[roles]` by name.
    pub roles: Vec<RoleView>,
}

/// One role and what it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleView {
    pub name: String,
    /// The tokens it may be given to: `workspace`, `project`, or `any`
    /// (a custom role, for either kind).
    pub scope: RoleScope,
    /// Built in, rather than from `[roles]` in the config.
    pub builtin: bool,
    /// `resource:action`, in resource then action order.
    pub permissions: Vec<String>,
}

impl RolesAnswer {
    /// Every role of `roles`.
    pub fn of(roles: &Roles) -> Self {
        Self {
            roles: roles
                .listed()
                .into_iter()
                .map(|l| RoleView {
                    name: l.name.to_owned(),
                    scope: l.role.scope,
                    builtin: l.builtin,
                    permissions: l
                        .role
                        .permissions
                        .iter()
                        .map(|p| p.as_str().to_owned())
                        .collect(),
                })
                .collect(),
        }
    }
}

impl TokenView {
    /// While a rotation's overlap lasts: when the old value stops working
    /// (the overlap's end, or the token's expiry if sooner).
    pub fn works_until(&self, now: Timestamp) -> Option<Timestamp> {
        // Revoked at once (see `TokenRecord::refused_from`): no overlap,
        // whatever this clock reads.
        if self.revoked_by.is_some() || self.rotated_to.is_none() {
            return None;
        }
        let end = self.revoked_at.filter(|r| *r > now)?;
        Some(self.expires_at.map_or(end, |e| e.min(end))).filter(|t| *t > now)
    }
}

/// The answer of update, disable, enable and revoke.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenAnswer {
    pub token: TokenView,
}

/// The answer of create and rotate: the token and, this once, its secret;
/// for a rotate, also the old token as the rotate left it. `Debug` never
/// shows the secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct Created {
    pub token: TokenView,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<TokenView>,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("token", &self.token)
            .field("secret", &"***")
            .field("old", &self.old)
            .finish()
    }
}

/// One page of `GET /admin/v1/tokens`. `T` is [`TokenView`]; a client that
/// only passes tokens on may keep them as JSON values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPage<T = TokenView> {
    pub tokens: Vec<T>,
    /// Give it back as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// The body of `POST /admin/v1/explain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The token (`tok_…`); left out, the request presents no Hawzu token
    /// (a session cookie, another bearer, nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    pub method: String,
    /// The request path as a client sends it, query included.
    pub path: String,
    /// The client's address, as the doors would work it out (needed for a
    /// token with `allow_from`; left out, such a token is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// The answer of `POST /admin/v1/explain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explained {
    /// `allow`, `passed` (let through with no identity) or `deny`.
    pub decision: String,
    /// The deny code; `null` when allowed.
    pub code: Option<String>,
    /// The HTTP status the doors would answer.
    pub status: u16,
    /// The token; `null` when the request presents none.
    pub token: Option<TokenView>,
    /// The rule that matched; `null` when none did.
    pub rule: Option<RuleView>,
    /// The role that allowed, or that was checked and refused.
    pub role: Option<String>,
    /// The project of the request, when allowed by a project grant's rule.
    pub project: Option<String>,
    /// The permission that allowed the request.
    pub permission: Option<String>,
    /// The walk in words; the last step repeats the verdict.
    pub steps: Vec<String>,
}

/// A policy rule as `explain` names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleView {
    pub origin: String,
    pub methods: String,
    pub template: String,
    pub permission: String,
}

/// Every error answer of the admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error code (`not_found`, `validation_failed`, …).
    pub error: String,
    pub message: String,
    /// Field path → what would be accepted, for a request with bad fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldErrors>,
}

// === usage (issue 13: usage per token) ===

/// Requests allowed and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub allowed: u64,
    pub refused: u64,
}

/// The answer of `GET /admin/v1/tokens/{id}/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAnswer {
    pub token_id: TokenId,
    /// The start of the first hour counted.
    #[serde(with = "seconds")]
    pub since: Timestamp,
    /// The instant of the answer (the current hour counts so far).
    #[serde(with = "seconds")]
    pub until: Timestamp,
    /// Every request of the window.
    pub totals: RequestCounts,
    /// The hours with any request, oldest first.
    pub hours: Vec<HourUsage>,
    /// The last distinct clients (address and user agent), most recently
    /// seen first; kept `usage.retention`, whatever `since` says.
    pub clients: Vec<ClientView>,
    /// The last refusal of the token; `null` when none is kept.
    pub last_refusal: Option<RefusalView>,
}

/// One hour's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourUsage {
    /// The start of the hour (UTC).
    #[serde(with = "seconds")]
    pub hour: Timestamp,
    pub allowed: u64,
    pub refused: u64,
}

/// A client of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientView {
    /// As the gate saw it (`trusted_proxies` applied).
    pub address: String,
    /// `""` when the requests had none; cut at 256 bytes.
    pub user_agent: String,
    #[serde(with = "seconds")]
    pub first_seen: Timestamp,
    #[serde(with = "seconds")]
    pub last_seen: Timestamp,
}

/// A token's last refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalView {
    /// The deny code (`token_disabled`, `insufficient_role`, …).
    pub code: String,
    #[serde(with = "seconds")]
    pub at: Timestamp,
}

// === the audit log ===

/// One audit event as the API shows it (the stored event, with its id).
pub use crate::audit::AuditEvent;

/// The answer of `GET /admin/v1/audit`: events newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditAnswer<T = AuditEvent> {
    pub events: Vec<T>,
    /// Give it back as `cursor` for older events; `null` on the last page.
    pub next_cursor: Option<String>,
}

// === the token console's sign-in (`/console/session`) ===

/// The body of `POST /console/session`: the admin key, or a workspace
/// token whose role has `tokens:manage`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub credential: String,
}

impl std::fmt::Debug for SignInRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignInRequest(***)")
    }
}

/// The answer of `POST` and `GET /console/session`: who is signed in, and
/// the CSRF token every admin request of the session must carry in
/// `X-Hawzu-Csrf`. `Debug` never shows the CSRF token.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionAnswer {
    /// `admin` or `token:<id>`.
    pub caller: String,
    /// A token caller's workspace (the only one it sees); `null`: all.
    pub workspace: Option<String>,
    pub csrf_token: String,
    /// Seconds until the session ends at the latest.
    pub expires_in: u64,
    /// Seconds without a request after which it ends.
    pub idle_timeout: u64,
}

impl std::fmt::Debug for SessionAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAnswer")
            .field("caller", &self.caller)
            .field("workspace", &self.workspace)
            .field("csrf_token", &"***")
            .field("expires_in", &self.expires_in)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_answer_never_shows_its_csrf_token() {
        let a = SessionAnswer {
            caller: "admin".into(),
            workspace: None,
            csrf_token: "s3cretcsrf".into(),
            expires_in: 60,
            idle_timeout: 30,
        };
        let dump = format!("{a:?}");
        assert!(!dump.contains("s3cretcsrf"), "{dump}");
        assert!(dump.contains("admin"), "{dump}");
    }
}
