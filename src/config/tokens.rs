//! The `[tokens]` section: governance of the tokens anyone may create (the
//! longest lifetime and the highest role, globally and per workspace) and
//! the expiry signals (the background scan behind the `tokens_expiring`
//! gauge), and the token prefixes (`prefix`, `accepted_prefixes`). Owns
//! their defaults and checks; builds the policy's `Governance` and
//! `TokenPrefixes`. It must never look at a token or the store.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;
use crate::policy::governance::{Governance, Lifetime, TokenLimits};
use crate::policy::prefixes::{DEFAULT_PREFIX, Prefix, TokenPrefixes};
use crate::policy::roles::Roles;
use crate::token::expiry::{ExpirySpec, Length, parse_within};

/// Governance and expiry signals.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// The prefix new tokens are minted with: 3 to 16 lowercase letters
    /// and `_`, a letter first and `_` last. GitHub's secret scanning wants
    /// one prefix per issuer; `hawzu-gate leaks pattern` prints the regex.
    pub prefix: String,
    /// Earlier prefixes whose tokens keep working (the store is keyed by
    /// hash): a presented token may start with `prefix` or one of these.
    pub accepted_prefixes: Vec<String>,
    /// Longest lifetime a token may be given at create, rotate or update
    /// (`90d`, `3mo`, `1y`): `never` and later expiries are refused.
    /// Absent: no limit.
    pub max_lifetime: Option<String>,
    /// The highest role a token may get: a role is within it when every
    /// permission it grants is one this role grants. Absent: any role.
    pub max_role: Option<String>,
    /// Per-workspace limits, applied on top of the global ones.
    pub workspaces: BTreeMap<String, WorkspaceTokenSettings>,
    /// How often the store is scanned for tokens expiring within 1, 7 and
    /// 30 days (`hawzu_gate_tokens_expiring`); `0s` turns the scan off.
    pub expiry_scan_interval: HumanDuration,
    /// Most workspaces the gauge names; the others are summed under
    /// `workspace="_other"` (bounded label cardinality).
    pub expiring_workspaces: usize,
}

/// `[tokens.workspaces."<id>"]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkspaceTokenSettings {
    pub max_lifetime: Option<String>,
    pub max_role: Option<String>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            accepted_prefixes: Vec::new(),
            max_lifetime: None,
            max_role: None,
            workspaces: BTreeMap::new(),
            expiry_scan_interval: HumanDuration(Duration::from_secs(300)),
            expiring_workspaces: 100,
        }
    }
}

impl TokenSettings {
    /// Checks `tokens.prefix` and `tokens.accepted_prefixes`; `invalid(key,
    /// message)` names the key at fault.
    pub(crate) fn prefixes<E>(
        &self,
        invalid: impl Fn(&str, String) -> E,
    ) -> Result<TokenPrefixes, E> {
        let mint =
            Prefix::parse(&self.prefix).map_err(|e| invalid("tokens.prefix", e.to_string()))?;
        let also = self
            .accepted_prefixes
            .iter()
            .map(|p| {
                Prefix::parse(p).map_err(|e| invalid("tokens.accepted_prefixes", e.to_string()))
            })
            .collect::<Result<Vec<_>, E>>()?;
        Ok(TokenPrefixes::new(mint, also))
    }

    /// Checks `tokens.*` against `roles` and builds the governance;
    /// `invalid(key, message)` names the key at fault.
    pub(crate) fn build<E>(
        &self,
        roles: &Roles,
        invalid: impl Fn(&str, String) -> E,
    ) -> Result<Governance, E> {
        let level = |key: &str, lifetime: Option<&String>, role: Option<&String>| {
            let max_lifetime = match lifetime {
                None => None,
                Some(text) => {
                    let span = match parse_within(text.trim()) {
                        Ok(ExpirySpec::In(Length { .. })) => ExpirySpec::span_of(text.trim()),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        invalid(
                            &format!("{key}.max_lifetime"),
                            format!("`{text}` is not a lifetime; write a length such as 30d, 90d, 3mo or 1y"),
                        )
                    })?;
                    Some(Lifetime {
                        span,
                        text: text.trim().to_owned(),
                    })
                }
            };
            if let Some(r) = role
                && roles.get(r).is_none()
            {
                return Err(invalid(
                    &format!("{key}.max_role"),
                    format!("unknown role `{r}`; `hawzu-gate roles` lists them"),
                ));
            }
            Ok(TokenLimits {
                max_lifetime,
                max_role: role.cloned(),
            })
        };
        let global = level("tokens", self.max_lifetime.as_ref(), self.max_role.as_ref())?;
        let mut workspaces = BTreeMap::new();
        for (ws, s) in &self.workspaces {
            let key = format!("tokens.workspaces.\"{ws}\"");
            workspaces.insert(
                ws.clone(),
                level(&key, s.max_lifetime.as_ref(), s.max_role.as_ref())?,
            );
        }
        if self.expiring_workspaces == 0 {
            return Err(invalid(
                "tokens.expiring_workspaces",
                "must be at least 1".into(),
            ));
        }
        Ok(Governance { global, workspaces })
    }
}
