//! The `[roles]` and `[policy]` sections: custom roles and route rules as
//! written, and their turning into a checked [`Policy`]. Owns the settings
//! shapes and that build; the rule and role semantics stay in
//! `crate::policy`, and this must never decide a request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::ids::{DEFAULT_ID_PATTERN, IdPattern};
use crate::policy::roles::{Permission, RoleScope, Roles};
use crate::policy::rules::{MethodSet, Rule, RuleError, RuleSet, Template};
use crate::policy::{Access, OtherCredentials, Policy};

/// Route rules: yours first, then (unless turned off) the built-in set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// Append the built-in rules for the Hawzu REST API after `rules`.
    pub default_rules: bool,
    /// Rules checked in order before the built-in ones; the first match wins.
    pub rules: Vec<RuleSettings>,
    /// The workspace and project ids a token may name: a regular expression
    /// the whole id must match (a create naming another is refused, 422).
    pub id_pattern: String,
    /// A request that presents no Hawzu token (a session cookie, another
    /// bearer such as a JWT, nothing): `refuse` (401) or `pass` (forwarded
    /// with no identity for the API to judge). A request with anything
    /// shaped like a Hawzu token is always judged.
    pub other_credentials: OtherCredentials,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            default_rules: true,
            rules: Vec::new(),
            id_pattern: DEFAULT_ID_PATTERN.to_owned(),
            other_credentials: OtherCredentials::Refuse,
        }
    }
}

/// One route rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Template: literals, `{workspace}`, `{project}`, `*`, `**` (last).
    pub path: String,
    /// Methods it applies to: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS.
    pub methods: Vec<String>,
    /// The permission a token's role must have: `resource:action`. A rule
    /// names this or `access`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    /// `"public"`: the path needs no credentials (instead of `permission`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
}

impl RuleSettings {
    /// What the rule asks: exactly one of `permission` and `access = "public"`.
    fn access(&self) -> Result<Access, String> {
        match (&self.permission, self.access.as_deref()) {
            (Some(p), None) => Permission::parse(p)
                .map(Access::Permission)
                .map_err(|e| RuleError::from(e).to_string()),
            (None, Some("public")) => Ok(Access::Public),
            (None, Some(other)) => Err(format!(
                "access: `{other}` is not an access; use access = \"public\" (or a `permission`)"
            )),
            (Some(_), Some(_)) => Err(
                "names both `permission` and `access`; a rule needs a permission or is public, not both"
                    .into(),
            ),
            (None, None) => Err(
                "needs `permission = \"resource:action\"` or `access = \"public\"`".into(),
            ),
        }
    }
}

impl PolicySettings {
    /// Builds the policy from the custom `roles`, these rules (yours
    /// first, then the built-in ones unless turned off) and the id pattern;
    /// a bad role, rule or pattern is an error naming `roles`,
    /// `policy.rules[i]` or `policy.id_pattern`.
    pub(crate) fn build<E>(
        &self,
        roles: &BTreeMap<String, Vec<String>>,
        invalid: impl Fn(&str, String) -> E,
    ) -> Result<Policy, E> {
        let roles = Roles::with_custom(
            roles
                .iter()
                .map(|(name, perms)| (name.as_str(), RoleScope::Any, perms.as_slice())),
        )
        .map_err(|e| invalid("roles", e.to_string()))?;
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let key = format!("policy.rules[{i}]");
            let rule = (|| {
                Ok::<_, String>(Rule {
                    methods: MethodSet::parse(r.methods.iter().map(String::as_str))
                        .map_err(|e| e.to_string())?,
                    template: Template::parse(&r.path).map_err(|e| e.to_string())?,
                    access: r.access()?,
                    origin: key.clone(),
                })
            })()
            .map_err(|e| invalid(&key, e))?;
            rules.push(rule);
        }
        if self.default_rules {
            rules.extend(RuleSet::defaults().rules().iter().cloned());
        }
        let ids = IdPattern::new(&self.id_pattern).map_err(|e| invalid("policy.id_pattern", e))?;
        Ok(Policy {
            roles,
            rules: RuleSet::new(rules),
            ids,
            other_credentials: self.other_credentials,
            governance: Default::default(),
            prefixes: Default::default(),
        })
    }
}
