//! Policy: roles with their permissions, route rules with path handling,
//! and the id pattern. Built once from config (and again on reload); pure data, no I/O.

pub mod governance;
pub mod ids;
mod memo;
pub mod net;
pub mod prefixes;
pub mod roles;
pub mod rules;

use std::fmt;

use ids::IdPattern;

use roles::{Permission, Roles};
use rules::RuleSet;
use serde::{Deserialize, Serialize};

/// Everything `decide` needs besides the token: who may do what, where,
/// and what becomes of a request that carries no Hawzu token.
#[derive(Debug, Clone)]
pub struct Policy {
    pub roles: Roles,
    pub rules: RuleSet,
    pub other_credentials: OtherCredentials,
    /// The workspace and project ids a token may name (checked at create).
    pub ids: IdPattern,
    /// Longest lifetime and highest role per workspace (`[tokens]`).
    pub governance: governance::Governance,
    /// The prefix new tokens get and the prefixes a token may have
    /// (`tokens.prefix`, `tokens.accepted_prefixes`).
    pub prefixes: prefixes::TokenPrefixes,
}

impl TryFrom<String> for OtherCredentials {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "refuse" => Ok(Self::Refuse),
            "pass" => Ok(Self::Pass),
            _ => Err(format!(
                "`{s}` is not a choice; use refuse (a request without a Hawzu token is 401) or pass (it is forwarded with no identity for the API to judge)"
            )),
        }
    }
}

/// What a rule asks of a request (`permission = "…"` or `access =
/// "public"` in config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A token whose role has this permission.
    Permission(Permission),
    /// Nothing: the path needs no credentials. A request without a Hawzu
    /// token is passed; one with a Hawzu token has it judged (a bad token
    /// is refused) and is passed without identity headers.
    Public,
}

impl From<Permission> for Access {
    fn from(p: Permission) -> Self {
        Access::Permission(p)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Permission(p) => p.fmt(f),
            Access::Public => f.write_str("public"),
        }
    }
}

/// `policy.other_credentials`: what becomes of a request that presents no
/// Hawzu token (a session cookie, another bearer such as a JWT, nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum OtherCredentials {
    /// Refused as today (`missing_token`, `malformed_token`), except on a
    /// public route.
    #[default]
    Refuse,
    /// Passed with no identity: forwarded untouched for the API to judge
    /// (proxy), allowed with no identity headers (forward auth, gRPC).
    Pass,
}

impl Default for Policy {
    /// The built-in roles and rules.
    fn default() -> Self {
        Self {
            roles: Roles::default(),
            rules: RuleSet::defaults(),
            ids: IdPattern::default(),
            other_credentials: OtherCredentials::Refuse,
            governance: governance::Governance::default(),
            prefixes: prefixes::TokenPrefixes::default(),
        }
    }
}
