//! Roles and permissions: the built-in Hawzu roles, custom roles from config,
//! and permission sets as bit masks.
//!
//! A permission is `<resource>:<action>`; a set of them is a `u64` with one
//! bit per pair, so "does this role grant that" and "is this role within that
//! one" are single mask operations on the request path. Nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// Resources, in bit order.
pub const RESOURCES: [&str; 11] = [
    "workspace",
    "projects",
    "testcases",
    "testplans",
    "executions",
    "defects",
    "requirements",
    "reports",
    "members",
    "settings",
    "tokens",
];
/// Actions, in bit order.
pub const ACTIONS: [&str; 4] = ["read", "write", "delete", "manage"];

/// One `<resource>:<action>` pair.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    resource: u8,
    action: u8,
}

impl Permission {
    /// Parses an exact permission (no wildcards), e.g. `testcases:read`.
    pub fn parse(s: &str) -> Result<Self, PermissionError> {
        let (r, a) = s
            .split_once(':')
            .ok_or_else(|| PermissionError::Syntax(s.to_owned()))?;
        let resource = RESOURCES
            .iter()
            .position(|x| *x == r)
            .ok_or_else(|| PermissionError::UnknownResource(r.to_owned()))?;
        let action = ACTIONS
            .iter()
            .position(|x| *x == a)
            .ok_or_else(|| PermissionError::UnknownAction(a.to_owned()))?;
        Ok(Self {
            resource: resource as u8,
            action: action as u8,
        })
    }

    /// `resource:action`, without allocating (for headers on the hot path).
    pub fn as_str(self) -> &'static str {
        static NAMES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
            RESOURCES
                .iter()
                .flat_map(|r| ACTIONS.iter().map(move |a| format!("{r}:{a}")))
                .collect()
        });
        NAMES
            .get(self.resource as usize * ACTIONS.len() + self.action as usize)
            .map_or("", String::as_str)
    }

    fn bit(self) -> u64 {
        1 << (self.resource as u32 * ACTIONS.len() as u32 + self.action as u32)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `tokens:manage`: lets a workspace token use the admin API.
pub const TOKENS_MANAGE: Permission = Permission {
    resource: 10,
    action: 3,
};

/// A permission string that names nothing we know.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PermissionError {
    #[error("`{0}` is not `<resource>:<action>`")]
    Syntax(String),
    #[error("unknown resource `{0}` (known: {known}, or `*`)", known = RESOURCES.join(", "))]
    UnknownResource(String),
    #[error("unknown action `{0}` (known: {known}, or `*`)", known = ACTIONS.join(", "))]
    UnknownAction(String),
}

// === impl PermissionSet ===

/// A set of permissions, one bit each.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PermissionSet(u64);

impl PermissionSet {
    pub const EMPTY: Self = Self(0);

    /// Parses a pattern where `*` may stand for the resource, the action, or both.
    pub fn parse_pattern(s: &str) -> Result<Self, PermissionError> {
        let (r, a) = s
            .split_once(':')
            .ok_or_else(|| PermissionError::Syntax(s.to_owned()))?;
        let resources: Vec<usize> = if r == "*" {
            (0..RESOURCES.len()).collect()
        } else {
            vec![
                RESOURCES
                    .iter()
                    .position(|x| *x == r)
                    .ok_or_else(|| PermissionError::UnknownResource(r.to_owned()))?,
            ]
        };
        let actions: Vec<usize> = if a == "*" {
            (0..ACTIONS.len()).collect()
        } else {
            vec![
                ACTIONS
                    .iter()
                    .position(|x| *x == a)
                    .ok_or_else(|| PermissionError::UnknownAction(a.to_owned()))?,
            ]
        };
        let mut set = Self::EMPTY;
        for &r in &resources {
            for &a in &actions {
                set = set.with(Permission {
                    resource: r as u8,
                    action: a as u8,
                });
            }
        }
        Ok(set)
    }

    /// The union of several patterns.
    pub fn parse_all<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, PermissionError> {
        patterns
            .into_iter()
            .try_fold(Self::EMPTY, |acc, p| Ok(acc.union(Self::parse_pattern(p)?)))
    }

    #[must_use]
    pub fn with(self, p: Permission) -> Self {
        Self(self.0 | p.bit())
    }

    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    #[must_use]
    pub fn minus(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// True when every permission of `self` is also in `other`.
    pub fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    /// The permissions, in resource then action order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        (0..RESOURCES.len()).flat_map(move |r| {
            (0..ACTIONS.len()).filter_map(move |a| {
                let p = Permission {
                    resource: r as u8,
                    action: a as u8,
                };
                self.contains(p).then_some(p)
            })
        })
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

// === impl Roles ===

/// Which kind of token a role may be given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleScope {
    Workspace,
    Project,
    /// Custom roles may be given to either kind unless config says otherwise.
    Any,
}

impl RoleScope {
    pub fn allows(self, token_kind: RoleScope) -> bool {
        self == RoleScope::Any || self == token_kind
    }
}

/// One role: its scope and permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub scope: RoleScope,
    pub permissions: PermissionSet,
}

/// One role of [`Roles::listed`].
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    pub name: &'a str,
    pub role: &'a Role,
    /// Built in, rather than from `[roles]` in the config.
    pub builtin: bool,
}

/// The role table: built-in roles plus custom roles from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    by_name: BTreeMap<String, Role>,
}

/// A custom role from config that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoleError {
    #[error("role `{0}` is built in and cannot be redefined")]
    Builtin(String),
    #[error("role name `{0}` must be 1-64 characters of a-z, 0-9 and `_`")]
    Name(String),
    #[error("role `{role}`: {source}")]
    Permission {
        role: String,
        #[source]
        source: PermissionError,
    },
    #[error("role `{0}` grants no permission")]
    Empty(String),
}

const RESOURCE_WORK: [&str; 5] = [
    "testcases",
    "testplans",
    "executions",
    "defects",
    "requirements",
];

fn set(patterns: &[&str]) -> PermissionSet {
    // Only called with the literal built-in patterns below, which all parse.
    PermissionSet::parse_all(patterns.iter().copied()).unwrap_or_default()
}

/// `action` on each of the work resources (test cases, plans, executions…).
fn on_work_resources(action: &str) -> PermissionSet {
    let patterns = RESOURCE_WORK.map(|r| format!("{r}:{action}"));
    PermissionSet::parse_all(patterns.iter().map(String::as_str)).unwrap_or_default()
}

fn builtin_sets() -> [(&'static str, RoleScope, PermissionSet); 8] {
    let viewer = set(&["*:read"]).minus(set(&["settings:read", "tokens:read"]));
    let member = viewer.union(on_work_resources("write"));
    let coordinator = member
        .union(on_work_resources("delete"))
        .union(set(&["reports:write"]));
    let project_manager = set(&["*:*"]).minus(set(&["workspace:*", "tokens:*"]));
    let workspace_manager = set(&["*:*"]);
    use RoleScope::{Project, Workspace};
    [
        ("workspace_viewer", Workspace, viewer),
        ("workspace_member", Workspace, member),
        ("workspace_coordinator", Workspace, coordinator),
        ("workspace_manager", Workspace, workspace_manager),
        ("project_viewer", Project, viewer),
        ("project_member", Project, member),
        ("project_coordinator", Project, coordinator),
        ("project_manager", Project, project_manager),
    ]
}

impl Default for Roles {
    fn default() -> Self {
        let by_name = builtin_sets()
            .into_iter()
            .map(|(name, scope, permissions)| (name.to_owned(), Role { scope, permissions }))
            .collect();
        Self { by_name }
    }
}

impl Roles {
    /// The built-in roles plus `custom` (name → scope and permission patterns).
    pub fn with_custom<'a>(
        custom: impl IntoIterator<Item = (&'a str, RoleScope, &'a [String])>,
    ) -> Result<Self, RoleError> {
        let mut roles = Self::default();
        for (name, scope, patterns) in custom {
            if roles.by_name.contains_key(name) {
                return Err(RoleError::Builtin(name.to_owned()));
            }
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(RoleError::Name(name.to_owned()));
            }
            let permissions = PermissionSet::parse_all(patterns.iter().map(String::as_str))
                .map_err(|source| RoleError::Permission {
                    role: name.to_owned(),
                    source,
                })?;
            if permissions == PermissionSet::EMPTY {
                return Err(RoleError::Empty(name.to_owned()));
            }
            roles
                .by_name
                .insert(name.to_owned(), Role { scope, permissions });
        }
        Ok(roles)
    }

    pub fn get(&self, name: &str) -> Option<&Role> {
        self.by_name.get(name)
    }

    /// Every role: the built-in ones in rank order (workspace roles, then
    /// project roles, each from viewer up), then the custom ones by name.
    pub fn listed(&self) -> Vec<Listed<'_>> {
        let builtin = builtin_sets().map(|(name, _, _)| name);
        let named = |name: &str, builtin: bool| {
            self.by_name.get_key_value(name).map(|(name, role)| Listed {
                name: name.as_str(),
                role,
                builtin,
            })
        };
        let custom = self
            .by_name
            .keys()
            .filter(|n| !builtin.contains(&n.as_str()))
            .filter_map(|n| named(n, false));
        builtin
            .iter()
            .filter_map(|n| named(n, true))
            .chain(custom)
            .collect()
    }

    /// Role names usable for a token of `kind`, sorted.
    pub fn names_for(&self, kind: RoleScope) -> Vec<&str> {
        self.by_name
            .iter()
            .filter(|(_, r)| r.scope.allows(kind))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

#[cfg(test)]
#[path = "roles_tests.rs"]
mod tests;
