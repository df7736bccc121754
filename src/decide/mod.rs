//! The decision: request facts in, [`Decision`] out.
//!
//! Every front door translates its protocol into [`RequestFacts`], calls
//! [`decide`], and renders the [`Decision`] back. This module holds the
//! whole policy path of docs/design.md — extract, parse, hash, cache/store,
//! state, rule, role — and no HTTP; its only I/O is the cache lookup. A deny
//! is a `Decision`, not an error: even the gate's own faults end as a deny
//! (`store_unavailable`), so the gate fails closed.

use std::sync::Arc;

use http::Method;
use jiff::Timestamp;

use crate::cache::{CachedRecord, CachedScope, TokenCache};
use crate::metrics::Outcome;
pub mod pass;

use crate::policy::prefixes::TokenPrefixes;
use crate::policy::roles::Permission;
use crate::policy::rules::{AmbiguousPath, Captures, Rule};
use crate::policy::{Access, Policy};
use crate::refusal::{DenyCode, Refusal};
use crate::store::TokenStore;
use crate::token::{TokenHash, TokenKind};
use pass::{PassReason, Passed, presents_token, without_token};

mod checks;
mod facts;
pub use self::checks::{
    check_cached_state, check_context, check_request, check_state, extract_token,
};
pub use self::facts::{Client, ClientAddr, Credentials, Override, RequestFacts};

/// Which grant of the token allowed the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grant {
    /// The workspace role of a workspace token.
    Workspace,
    /// The grant at this index of a project token's projects.
    Project(usize),
}

/// Who is calling and what allowed it. Borrowed views, no copies of the
/// record on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal<'a> {
    pub record: Arc<CachedRecord>,
    pub grant: Grant,
    pub permission: Permission,
    /// The `{project}` the rule captured, if any (borrowed from the path).
    pub project: Option<&'a str>,
}

impl Principal<'_> {
    pub fn token_id(&self) -> &str {
        self.record.id()
    }

    pub fn kind(&self) -> TokenKind {
        self.record.kind()
    }

    pub fn workspace_id(&self) -> &str {
        self.record.workspace_id()
    }

    /// The project of the request, when the rule captured one.
    pub fn project_id(&self) -> Option<&str> {
        self.project
    }

    /// The one role that granted this request.
    pub fn role(&self) -> &str {
        match (self.grant, self.record.scope()) {
            (Grant::Workspace, CachedScope::Workspace { role }) => role,
            (Grant::Project(i), CachedScope::Project { grants }) => {
                grants.get(i).map_or("", |g| &*g.role)
            }
            _ => "",
        }
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    Allow(Principal<'a>),
    /// Let through with no identity (see [`pass`]).
    Pass(Passed),
    Deny(Deny),
}

/// A refusal, with what the gate knew when it refused (for logs, metrics
/// and `explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub code: DenyCode,
    /// The token, when it was found.
    pub record: Option<Arc<CachedRecord>>,
    pub detail: Option<Detail>,
}

/// Why a project token is refused a route that names no project: the
/// reason `explain` gives, and (in [`NO_PROJECT_MESSAGE`]) the doors' deny
/// message. One literal, so the two cannot drift.
macro_rules! no_project {
    () => {
        "the route names no project, and a project token acts only inside its projects"
    };
}
pub const NO_PROJECT: &str = no_project!();
/// The deny message of [`NO_PROJECT`] (code `insufficient_role`).
pub const NO_PROJECT_MESSAGE: &str = concat!(
    "The token's role does not allow this request: ",
    no_project!(),
    "."
);

impl Deny {
    /// The refusal the doors render: the code, with the closer reason in
    /// the message where the gate knows one. No allocation.
    pub fn refusal(&self) -> Refusal {
        match (&self.code, &self.detail) {
            (DenyCode::InsufficientRole, Some(Detail::Rule { role: None, .. })) => {
                Refusal::Because(self.code, NO_PROJECT_MESSAGE)
            }
            (DenyCode::AmbiguousPath, Some(Detail::Ambiguous(why))) => {
                Refusal::Because(self.code, why.message())
            }
            _ => Refusal::Deny(self.code),
        }
    }
}

/// Why a rule or role step refused, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Ambiguous(AmbiguousPath),
    /// The rule that matched (origin, template) and the permission it needs.
    Rule {
        origin: String,
        template: String,
        permission: Permission,
        /// The role that was checked, when one was.
        role: Option<String>,
    },
}

impl Decision<'_> {
    /// The token's record, when it was found (for logs).
    pub fn record(&self) -> Option<Arc<CachedRecord>> {
        match self {
            Decision::Allow(p) => Some(p.record.clone()),
            Decision::Pass(p) => p.record.clone(),
            Decision::Deny(d) => d.record.clone(),
        }
    }

    /// The outcome, as metrics and the access log count it.
    pub fn outcome(&self) -> Outcome {
        match self {
            Decision::Allow(_) => Outcome::Allow,
            Decision::Pass(_) => Outcome::Passed,
            Decision::Deny(d) => Outcome::Deny(d.code),
        }
    }

    /// A deny with nothing known but its code.
    pub fn deny_only(code: DenyCode) -> Self {
        Decision::Deny(Deny {
            code,
            record: None,
            detail: None,
        })
    }

    /// The deny code, if refused.
    pub fn code(&self) -> Option<DenyCode> {
        match self {
            Decision::Allow(_) | Decision::Pass(_) => None,
            Decision::Deny(d) => Some(d.code),
        }
    }
}

/// Steps 1-5: extract, parse, hash, look up (cache, then store), state.
pub async fn authenticate<S: TokenStore>(
    cache: &TokenCache<S>,
    prefixes: &TokenPrefixes,
    facts: &RequestFacts<'_>,
) -> Result<Arc<CachedRecord>, Deny> {
    let bare = |code| Deny {
        code,
        record: None,
        detail: None,
    };
    let secret = extract_token(facts.credentials, prefixes).map_err(bare)?;
    lookup(cache, &secret.hash(), facts.now, facts.client).await
}

/// Steps 4-5 for the hash of a well-formed token: look up (cache, then
/// store), state, context. The console's sessions keep a manager token's
/// hash, never its value, and judge it again here on every request.
pub async fn lookup<S: TokenStore>(
    cache: &TokenCache<S>,
    hash: &TokenHash,
    now: Timestamp,
    client: ClientAddr<'_>,
) -> Result<Arc<CachedRecord>, Deny> {
    let bare = |code| Deny {
        code,
        record: None,
        detail: None,
    };
    let record = match cache.lookup(hash).await {
        Ok(Some(record)) => record,
        Ok(None) => return Err(bare(DenyCode::UnknownToken)),
        Err(e) => {
            tracing::warn!(error = %e, "token lookup failed; refusing (fail closed)");
            return Err(bare(DenyCode::StoreUnavailable));
        }
    };
    if let Err(code) =
        check_cached_state(&record, now).and_then(|()| check_context(&record, now, client))
    {
        return Err(Deny {
            code,
            record: Some(record),
            detail: None,
        });
    }
    Ok(record)
}

/// The one decision every door calls. A request that presents nothing
/// shaped like a Hawzu token may pass (a public route, or
/// `policy.other_credentials = "pass"`); anything else is judged.
pub async fn decide<'a, S: TokenStore>(
    cache: &TokenCache<S>,
    policy: &Policy,
    facts: &RequestFacts<'a>,
) -> Decision<'a> {
    // Hot path: a well-formed token goes straight on; only a request
    // without one is looked at again.
    let secret = match extract_token(facts.credentials, &policy.prefixes) {
        Ok(secret) => secret,
        Err(code) if presents_token(facts.credentials, &policy.prefixes) => {
            // Shaped like a token but not one (`Basic` with a token inside):
            // it is a malformed token, not a missing one.
            let code = match code {
                DenyCode::MissingToken => DenyCode::MalformedToken,
                code => code,
            };
            return Decision::deny_only(code);
        }
        Err(code) => return without_token(policy, facts, code),
    };
    match lookup(cache, &secret.hash(), facts.now, facts.client).await {
        Ok(record) => match check_request(facts.query, facts.upgrade, facts.override_header) {
            Ok(()) => authorize(policy, record, facts.method, facts.path),
            Err(code) => Decision::Deny(Deny {
                code,
                record: Some(record),
                detail: None,
            }),
        },
        Err(deny) => Decision::Deny(deny),
    }
}

/// Steps 6-7 for a valid token: the rule for the request, then the role.
/// Pure: no I/O. The doors' path: [`authorize_traced`] with no trace.
pub fn authorize<'a>(
    policy: &Policy,
    record: Arc<CachedRecord>,
    method: &Method,
    raw_path: &'a str,
) -> Decision<'a> {
    authorize_traced(policy, record, method, raw_path, &mut ())
}

/// What [`authorize_traced`] looked at, step by step, told to whoever asked
/// (`explain` renders it). The request path passes `()`, whose methods are
/// all empty: it records and allocates nothing.
pub trait Trace<'r> {
    /// The path could not be read one way, so no rule was looked for.
    fn ambiguous(&mut self, _why: &AmbiguousPath) {}
    /// No rule matches the method and path (deny by default).
    fn no_rule(&mut self) {}
    /// This rule matched first, with what its template captured.
    fn rule(&mut self, _rule: &'r Rule, _captures: &Captures<'_>) {}
}

impl Trace<'_> for () {}

/// [`authorize`], telling `trace` each step it takes: `explain` shows the
/// walk that decided, not a second one.
pub fn authorize_traced<'a, 'r>(
    policy: &'r Policy,
    record: Arc<CachedRecord>,
    method: &Method,
    raw_path: &'a str,
    trace: &mut impl Trace<'r>,
) -> Decision<'a> {
    let found = match policy.rules.find_raw(method, raw_path) {
        Ok(found) => found,
        Err(why) => {
            trace.ambiguous(&why);
            return Decision::Deny(Deny {
                code: DenyCode::AmbiguousPath,
                record: Some(record),
                detail: Some(Detail::Ambiguous(why)),
            });
        }
    };
    let Some(found) = found else {
        trace.no_rule();
        return Decision::Deny(Deny {
            code: DenyCode::NoMatchingRule,
            record: Some(record),
            detail: None,
        });
    };
    let rule = found.rule;
    trace.rule(rule, &found.captures);
    let permission = match rule.access {
        Access::Permission(p) => p,
        // A public route needs nothing: the valid token grants nothing
        // here, and the request passes without an identity.
        Access::Public => {
            return Decision::Pass(Passed {
                reason: PassReason::Public,
                record: Some(record),
            });
        }
    };
    let refuse = |code, role: Option<&str>, record: Arc<CachedRecord>| {
        Decision::Deny(Deny {
            code,
            record: Some(record),
            detail: Some(Detail::Rule {
                origin: rule.origin.clone(),
                template: rule.template.as_str().to_owned(),
                permission,
                role: role.map(str::to_owned),
            }),
        })
    };
    if let Some(ws) = found.captures.workspace
        && ws != record.workspace_id()
    {
        return refuse(DenyCode::WorkspaceMismatch, None, record);
    }
    let (grant, role_name) = match record.scope() {
        CachedScope::Workspace { role } => (Grant::Workspace, &**role),
        CachedScope::Project { grants } => {
            // Only the role of the project the request touches counts; a
            // route without a project is not for project tokens.
            let Some(project) = found.captures.project else {
                return refuse(DenyCode::InsufficientRole, None, record);
            };
            match grants.iter().position(|g| &*g.project_id == project) {
                Some(i) => (Grant::Project(i), &*grants[i].role),
                None => return refuse(DenyCode::ProjectNotGranted, None, record),
            }
        }
    };
    let allowed = policy
        .roles
        .get(role_name)
        .is_some_and(|r| r.permissions.contains(permission));
    if !allowed {
        let role = role_name.to_owned();
        return refuse(DenyCode::InsufficientRole, Some(&role), record);
    }
    Decision::Allow(Principal {
        record,
        grant,
        permission,
        project: found.captures.project,
    })
}

#[cfg(test)]
mod tests;
