//! The `[roles]` and `[policy]` sections: custom roles and route rules as
//! written, and their turning into a checked [`Policy`]. Owns the settings
//! shapes and that build; the rule and role semantics stay in
//! `crate::policy`, and this must never decide a request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::Policy;
use crate::policy::ids::{DEFAULT_ID_PATTERN, IdPattern};
use crate::policy::roles::{Permission, RoleScope, Roles};
use crate::policy::rules::{MethodSet, Rule, RuleError, RuleSet, Template};

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
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            default_rules: true,
            rules: Vec::new(),
            id_pattern: DEFAULT_ID_PATTERN.to_owned(),
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
    /// The permission a token's role must have: `resource:action`.
    pub permission: String,
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
                Ok::<_, RuleError>(Rule {
                    methods: MethodSet::parse(r.methods.iter().map(String::as_str))?,
                    template: Template::parse(&r.path)?,
                    permission: Permission::parse(&r.permission)?,
                    origin: key.clone(),
                })
            })()
            .map_err(|e| invalid(&key, e.to_string()))?;
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
        })
    }
}
