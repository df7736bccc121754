//! Policy: roles with their permissions, route rules with path handling,
//! and the id pattern. Built once from config (and again on reload); pure data, no I/O.

pub mod ids;
pub mod roles;
pub mod rules;

use ids::IdPattern;
use roles::Roles;
use rules::RuleSet;

/// Everything `decide` needs besides the token: who may do what, where.
#[derive(Debug, Clone)]
pub struct Policy {
    pub roles: Roles,
    pub rules: RuleSet,
    /// The workspace and project ids a token may name (checked at create).
    pub ids: IdPattern,
}

impl Default for Policy {
    /// The built-in roles and rules.
    fn default() -> Self {
        Self {
            roles: Roles::default(),
            rules: RuleSet::defaults(),
            ids: IdPattern::default(),
        }
    }
}
