//! Governance: the limits an operator sets on the tokens anyone may create
//! (`[tokens]` and `[tokens.workspaces."<id>"]` in the config) — the
//! longest lifetime and the highest role. Pure data and checks; the admin
//! API applies them at create, rotate and update.
//!
//! "At most a role" is a permission subset: roles are configurable sets of
//! permissions with no order of their own, so a role is within
//! `max_role = "R"` when every permission it grants is one `R` grants.
//! A workspace's limits apply on top of the global ones (both must hold).

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use super::roles::Roles;

/// A longest lifetime, as configured (`90d`, `3mo`, `1y`).
#[derive(Debug, Clone)]
pub struct Lifetime {
    /// Calendar arithmetic in UTC, as an expiry length.
    pub span: Span,
    /// As written in the config, for messages.
    pub text: String,
}

/// The limits of one level (global, or one workspace).
#[derive(Debug, Clone, Default)]
pub struct TokenLimits {
    pub max_lifetime: Option<Lifetime>,
    /// A role defined in the policy's roles (checked when built).
    pub max_role: Option<String>,
}

/// Every governance limit: global, then per workspace.
#[derive(Debug, Clone, Default)]
pub struct Governance {
    pub global: TokenLimits,
    pub workspaces: BTreeMap<String, TokenLimits>,
}

impl Governance {
    /// The levels that apply to `workspace`, each with its config key.
    fn levels(&self, workspace: &str) -> Vec<(String, &TokenLimits)> {
        let mut out = vec![("tokens".to_owned(), &self.global)];
        if let Some(ws) = self.workspaces.get(workspace) {
            out.push((format!("tokens.workspaces.\"{workspace}\""), ws));
        }
        out
    }

    /// Checks an expiry (`None`: never) for a token of `workspace` created
    /// (or rotated, or updated) at `now`; the message names the limit.
    pub fn check_expiry(
        &self,
        workspace: &str,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(), String> {
        for (key, limits) in self.levels(workspace) {
            let Some(max) = &limits.max_lifetime else {
                continue;
            };
            let latest = now
                .to_zoned_datetime(TimeZone::UTC)
                .checked_add(max.span)
                .map(|z| z.timestamp())
                .unwrap_or(Timestamp::MAX);
            match expires_at {
                None => {
                    return Err(format!(
                        "must not be `never`: {key}.max_lifetime is {}; give an expiry within it",
                        max.text
                    ));
                }
                Some(at) if at > latest => {
                    return Err(format!(
                        "{at} is later than {key}.max_lifetime ({}) allows: at most {latest}",
                        max.text
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Checks that `role` is within the maximum role for `workspace`: every
    /// permission it grants is one the maximum grants.
    pub fn check_role(&self, roles: &Roles, workspace: &str, role: &str) -> Result<(), String> {
        let Some(granted) = roles.get(role).map(|r| r.permissions) else {
            // An unknown role is refused by the role check itself.
            return Ok(());
        };
        for (key, limits) in self.levels(workspace) {
            let Some(max) = &limits.max_role else {
                continue;
            };
            let allowed = roles.get(max).map(|r| r.permissions).unwrap_or_default();
            if !granted.is_subset_of(allowed) {
                let extra: Vec<String> = granted
                    .iter()
                    .filter(|p| !allowed.contains(*p))
                    .map(|p| p.to_string())
                    .collect();
                return Err(format!(
                    "`{role}` is above {key}.max_role (`{max}`): it also grants {}",
                    extra.join(", ")
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::ToSpan;

    fn gov() -> Governance {
        Governance {
            global: TokenLimits {
                max_lifetime: Some(Lifetime {
                    span: 90.days(),
                    text: "90d".into(),
                }),
                max_role: Some("workspace_member".into()),
            },
            workspaces: BTreeMap::from([(
                "ws_strict".to_owned(),
                TokenLimits {
                    max_lifetime: Some(Lifetime {
                        span: 7.days(),
                        text: "7d".into(),
                    }),
                    max_role: Some("workspace_viewer".into()),
                },
            )]),
        }
    }

    #[test]
    fn lifetimes_refuse_never_and_later_expiries_with_the_limit() {
        let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let g = gov();
        let e = g.check_expiry("ws_1", None, now).unwrap_err();
        assert!(e.contains("tokens.max_lifetime is 90d"), "{e}");
        let at = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        assert!(
            g.check_expiry("ws_1", at("2027-03-31T00:00:00Z"), now)
                .is_ok()
        );
        let e = g
            .check_expiry("ws_1", at("2027-04-02T00:00:00Z"), now)
            .unwrap_err();
        assert!(e.contains("90d"), "{e}");
        // The workspace's own limit applies on top of the global one.
        let e = g
            .check_expiry("ws_strict", at("2027-01-10T00:00:00Z"), now)
            .unwrap_err();
        assert!(
            e.contains(r#"tokens.workspaces."ws_strict".max_lifetime (7d)"#),
            "{e}"
        );
    }

    #[test]
    fn roles_are_at_most_the_maximum_by_permission_subset() {
        let roles = Roles::default();
        let g = gov();
        assert!(g.check_role(&roles, "ws_1", "workspace_viewer").is_ok());
        assert!(g.check_role(&roles, "ws_1", "workspace_member").is_ok());
        // A project role is compared by its permissions too.
        assert!(g.check_role(&roles, "ws_1", "project_viewer").is_ok());
        let e = g
            .check_role(&roles, "ws_1", "workspace_manager")
            .unwrap_err();
        assert!(e.contains("tokens.max_role (`workspace_member`)"), "{e}");
        let e = g
            .check_role(&roles, "ws_strict", "workspace_member")
            .unwrap_err();
        assert!(e.contains("workspace_viewer"), "{e}");
    }
}
