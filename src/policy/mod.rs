//! Policy: roles with their permissions, and route rules with path
//! handling. Built once from config (and again on reload); pure data, no I/O.

pub mod ids;
pub mod roles;
pub mod rules;

use roles::Roles;
use rules::RuleSet;

/// Everything `decide` needs besides the token: who may do what, where.
#[derive(Debug, Clone)]
pub struct Policy {
    pub roles: Roles,
    pub rules: RuleSet,
}

impl Default for Policy {
    /// The built-in roles and rules.
    fn default() -> Self {
        Self {
            roles: Roles::default(),
            rules: RuleSet::defaults(),
        }
    }
}
