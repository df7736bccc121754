//! `hawzu-gate roles`: every role the running gate knows (built-in, and
//! from `[roles]` in its config) with the permissions it grants, through
//! `GET /admin/v1/roles`. Asks the gate rather than reading the local
//! config: the gate's table is the one its decisions use.

use clap::Args;
use http::Method;

use crate::admin::wire::{RoleView, RolesAnswer};
use crate::config::Loaded;
use crate::policy::roles::RoleScope;

use super::global::{Client, client};
use super::output::{Output, wrap};

/// The width the table is wrapped to.
const LINE: usize = 100;

#[derive(Debug, Args)]
pub(super) struct RolesArgs {
    #[command(flatten)]
    client: Client,
}

/// `roles`: one admin API call; a table per kind of token, or the answer
/// as JSON.
pub(super) async fn roles(loaded: &Loaded, args: RolesArgs) -> u8 {
    let client = match client(&args.client.admin, loaded) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let out = Output {
        json: args.client.json,
    };
    let answer = client.call(Method::GET, "/admin/v1/roles").await;
    out.finish(answer, |a: RolesAnswer| print_roles(&a.roles))
}

fn print_roles(roles: &[RoleView]) {
    let sections = [
        (RoleScope::Workspace, "Workspace roles (--role):"),
        (RoleScope::Project, "Project roles (--project ID=ROLE):"),
        (
            RoleScope::Any,
            "Roles from [roles] in the config (--role or --project):",
        ),
    ];
    let width = roles.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut first = true;
    for (scope, title) in sections {
        let of_scope: Vec<&RoleView> = roles.iter().filter(|r| r.scope == scope).collect();
        if of_scope.is_empty() {
            continue;
        }
        if !first {
            say!("");
        }
        first = false;
        say!("{title}");
        for r in of_scope {
            // Permissions wrapped beside the name, continued under the first.
            let lines = wrap(&r.permissions, LINE.saturating_sub(width + 4).max(30));
            let mut name = r.name.as_str();
            for line in lines {
                say!("  {name:<width$}  {line}");
                name = "";
            }
        }
    }
}
