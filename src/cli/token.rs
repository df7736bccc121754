//! The token commands (`token create|list|show|update|disable|enable|revoke|rotate|usage`)
//! and `explain`: their flags, and one admin API call each, with request
//! and answer bodies as the `admin::wire` structs.
//!
//! Never reads the store, and never prints a secret but the one a create or
//! rotate answer hands out.

use clap::{Args, Subcommand, ValueEnum};
use http::Method;

use crate::admin::client::AdminClient;
use crate::admin::wire::{
    CreateRequest, Created, RotateRequest, ShownToken, TokenAnswer, TokenView, UpdateRequest,
};
use crate::config::Loaded;
use crate::token::expiry::ExpirySpec;
use crate::token::{ProjectGrant, Scope, TokenId};

use crate::policy::roles::{RoleScope, Roles};

use super::global::{Client, OK, REFUSED, TokenIdParser, client};
use super::output::{Output, encode, print_table, when};
use super::pages::{fetch_pages, say_json_page};
use super::usage::{UsageArgs, parse_window, usage};

/// `token …`: the connection flags (before or after the token subcommand)
/// and the subcommand.
#[derive(Debug, Args)]
pub(super) struct TokenArgs {
    #[command(flatten)]
    client: Client,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Create a token. Its value is printed once and can never be read again.
    Create(CreateArgs),
    /// List tokens, newest first.
    List(ListArgs),
    /// Show one token.
    Show(IdArg),
    /// Change a token's name or description, or make it expire sooner.
    /// Never a later expiry, never another scope (create a new token).
    Update(UpdateArgs),
    /// Disable a token (refused until enabled again).
    Disable(IdArg),
    /// Enable a disabled token.
    Enable(IdArg),
    /// Revoke a token, permanently.
    Revoke(IdArg),
    /// Replace a token's value: a new token (new id and value) with the same
    /// name, description and scope, and by default the same expiry. The old
    /// value stops at once, or at the end of --overlap. An expired token can
    /// be rotated up to admin.rotate_after_expiry (default 7d) after it
    /// expired, with --expires. Disabled and revoked tokens cannot.
    Rotate(RotateArgs),
    /// Show a token's requests per hour (allowed and refused), its last
    /// clients (address and user agent) and its last refusal.
    Usage(UsageArgs),
}

#[derive(Debug, Args)]
pub(super) struct RotateArgs {
    /// The token id (tok_…).
    #[arg(value_name = "ID", value_parser = TokenIdParser)]
    id: TokenId,
    /// The new token's expiry, as at create: 7d, 2w, 1mo, 3mo, 6mo, 1y,
    /// never, or a date (2027-03-01 means 00:00 UTC that day) or RFC 3339
    /// instant. Default: the old token's expiry, unchanged (required when
    /// the old token has expired).
    #[arg(long, value_name = "WHEN", value_parser = parse_expiry)]
    expires: Option<String>,
    /// Keep the old value working this long (30m, 24h, 3d; at most
    /// admin.max_rotation_overlap, default 7d), so clients can switch over.
    /// Default: the old value stops at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_overlap)]
    overlap: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["name", "description", "expires", "allow_from", "allow_anywhere", "not_before"])))]
pub(super) struct UpdateArgs {
    /// The token id (tok_…).
    #[arg(value_name = "ID", value_parser = TokenIdParser)]
    id: TokenId,
    /// A new name (1-128 characters).
    #[arg(long)]
    name: Option<String>,
    /// A new description ("" removes it).
    #[arg(long)]
    description: Option<String>,
    /// An earlier expiry (never a later one): 7d, 1mo, … from now, or a
    /// date (00:00 UTC that day) or RFC 3339 instant.
    #[arg(long, value_name = "WHEN", value_parser = parse_expiry)]
    expires: Option<String>,
    /// Replace the client networks the token may be used from (repeat for
    /// more): 10.0.0.0/8, 2001:db8::/32, 192.0.2.7.
    #[arg(long, value_name = "CIDR", value_parser = parse_net, conflicts_with = "allow_anywhere")]
    allow_from: Vec<String>,
    /// Let the token be used from any address again (clears --allow-from).
    #[arg(long)]
    allow_anywhere: bool,
    /// When the token starts to work (as at create); "" makes it work at
    /// once.
    #[arg(long, value_name = "WHEN")]
    not_before: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["role", "project"])))]
pub(super) struct CreateArgs {
    /// A descriptive name, e.g. "CI Runner" (1-128 characters).
    #[arg(long)]
    name: String,
    /// What the token is for (optional, at most 1024 characters).
    #[arg(long)]
    description: Option<String>,
    /// The workspace id the token belongs to (as every project id: it must
    /// match policy.id_pattern, by default ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$).
    #[arg(long, value_name = "WS")]
    workspace: String,
    #[arg(long, value_name = "ROLE", help = role_help(RoleScope::Workspace))]
    role: Option<String>,
    #[arg(
        long = "project",
        value_name = "ID=ROLE",
        value_parser = parse_grant,
        help = role_help(RoleScope::Project)
    )]
    project: Vec<ProjectGrant>,
    /// How long the token works: 7d, 2w, 1mo, 3mo (or 3months), 6mo, 1y,
    /// never; or until a date, 2027-03-01 (it stops at 00:00 UTC, the start
    /// of that day), or an RFC 3339 instant, 2027-03-01T12:00:00Z. `m` alone
    /// is refused: write `mo` for months.
    #[arg(long, value_name = "WHEN", value_parser = parse_expiry)]
    expires: String,
    /// Who the token is created by (default: $USER).
    #[arg(long, value_name = "WHO")]
    created_by: Option<String>,
    /// Only from these client networks (repeat for more): 10.0.0.0/8,
    /// 2001:db8::/32, 192.0.2.7. The client address is the one
    /// trusted_proxies leads to. Default: any address.
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    allow_from: Vec<String>,
    /// Not before this instant: 2027-03-01T09:00:00Z, a date (00:00 UTC
    /// that day), or a length from now (12h, 2d). Default: at once.
    #[arg(long, value_name = "WHEN")]
    not_before: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateArg {
    Enabled,
    Disabled,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TypeArg {
    Workspace,
    Project,
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Only tokens of this workspace.
    #[arg(long, value_name = "WS")]
    workspace: Option<String>,
    /// Only tokens in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// Only tokens of this type.
    #[arg(long = "type", value_enum)]
    kind: Option<TypeArg>,
    /// Only usable tokens that expire within this long (1d, 7d, 30d, 12h).
    #[arg(long, value_name = "WITHIN", value_parser = parse_within)]
    expiring: Option<String>,
    /// Tokens per page (1-500).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
    limit: u16,
    /// Only tokens unused this long (30d, 12w): never used and created
    /// before, or last used before. Combine with --state enabled to find
    /// the ones still working.
    #[arg(long, value_name = "DURATION", value_parser = parse_window)]
    unused: Option<String>,
    /// Resume after a previous page (its next_cursor).
    #[arg(long)]
    cursor: Option<String>,
    /// Follow every page: the whole list (--json: one
    /// {"tokens":[…],"next_cursor":null} object with every token).
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
pub(super) struct IdArg {
    /// The token id (tok_…).
    #[arg(value_name = "ID", value_parser = TokenIdParser)]
    id: TokenId,
}

/// The help of `--role` or `--project`: the built-in roles of that kind.
fn role_help(kind: RoleScope) -> String {
    let roles = Roles::default();
    let names = roles
        .listed()
        .into_iter()
        .filter(|r| r.role.scope == kind)
        .map(|r| r.name)
        .collect::<Vec<_>>()
        .join(", ");
    match kind {
        RoleScope::Project => format!(
            "Project token: a project and its role, like proj_a=project_member; repeat \
             for more projects. Project roles: {names}, or a role from [roles] in the \
             config (`hawzu-gate roles` lists them all)"
        ),
        _ => format!(
            "Workspace token: its workspace role: {names}, or a role from [roles] in the \
             config (`hawzu-gate roles` lists them all)"
        ),
    }
}

fn parse_grant(s: &str) -> Result<ProjectGrant, String> {
    match s.split_once('=') {
        Some((p, r)) if !p.is_empty() && !r.is_empty() => Ok(ProjectGrant {
            project_id: p.to_owned(),
            role: r.to_owned(),
        }),
        _ => Err(format!(
            "`{s}` is not ID=ROLE; write it like --project proj_a=project_member"
        )),
    }
}

fn parse_expiry(s: &str) -> Result<String, String> {
    s.parse::<ExpirySpec>()
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_net(s: &str) -> Result<String, String> {
    s.parse::<crate::config::IpNet>().map(|_| s.to_owned())
}

fn parse_within(s: &str) -> Result<String, String> {
    crate::token::expiry::parse_within(s).map(|_| s.to_owned())
}

fn parse_overlap(s: &str) -> Result<String, String> {
    humantime::parse_duration(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write it like 30m, 24h or 3d"))
}

/// `token …`: one admin API call per command (`list --all`: one per page).
pub(super) async fn token(loaded: &Loaded, args: TokenArgs) -> u8 {
    let client = match client(&args.client.admin, loaded) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let out = Output {
        json: args.client.json,
    };
    match args.command {
        TokenCommand::Create(args) => {
            let scope = match args.role {
                Some(role) => Scope::Workspace { role },
                None => Scope::Project {
                    projects: args.project,
                },
            };
            let created_by = args
                .created_by
                .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
                .unwrap_or_else(|| "admin".into());
            let date_only = ExpirySpec::is_date_only(&args.expires);
            let body = CreateRequest {
                name: Some(args.name),
                description: args.description,
                workspace_id: Some(args.workspace),
                scope: Some(scope),
                expires: Some(args.expires),
                created_by: Some(created_by),
                allow_from: (!args.allow_from.is_empty()).then_some(args.allow_from),
                not_before: args.not_before,
            };
            let answer = client.send(Method::POST, "/admin/v1/tokens", &body).await;
            out.finish(answer, |c: Created| {
                out.created(&c, "Created");
                if date_only {
                    say!("(A date alone means 00:00 UTC, the start of that day: the token stops working then.)");
                }
            })
        }
        TokenCommand::List(args) => list(&client, &out, args).await,
        TokenCommand::Show(a) => {
            let answer = client
                .call(Method::GET, &format!("/admin/v1/tokens/{}", a.id))
                .await;
            out.finish(answer, |a: ShownToken| {
                out.show(&a.token);
                say!("{:<13} hawzu-gate audit --token {}", "history", a.token.id);
                out.permissions(&a.permissions);
            })
        }
        TokenCommand::Disable(a) => {
            change(&client, &out, Method::POST, &a.id, "/disable", "disabled").await
        }
        TokenCommand::Enable(a) => {
            change(&client, &out, Method::POST, &a.id, "/enable", "enabled").await
        }
        TokenCommand::Revoke(a) => {
            change(&client, &out, Method::DELETE, &a.id, "", "revoked").await
        }
        TokenCommand::Update(a) => {
            let date_only = a.expires.as_deref().is_some_and(ExpirySpec::is_date_only);
            let body = UpdateRequest {
                name: a.name,
                description: a.description,
                expires: a.expires,
                allow_from: if a.allow_anywhere {
                    Some(Vec::new())
                } else {
                    (!a.allow_from.is_empty()).then_some(a.allow_from)
                },
                not_before: a.not_before,
                other: Default::default(),
            };
            let answer = client
                .send(Method::PATCH, &format!("/admin/v1/tokens/{}", a.id), &body)
                .await;
            out.finish(answer, |a: TokenAnswer| {
                say!("Updated.");
                out.show(&a.token);
                if date_only {
                    say!("(A date alone means 00:00 UTC, the start of that day.)");
                }
            })
        }
        TokenCommand::Rotate(a) => {
            let date_only = a.expires.as_deref().is_some_and(ExpirySpec::is_date_only);
            let body = RotateRequest {
                expires: a.expires,
                overlap: a.overlap,
            };
            let answer = client
                .send(
                    Method::POST,
                    &format!("/admin/v1/tokens/{}/rotate", a.id),
                    &body,
                )
                .await;
            out.finish(answer, |c: Created| {
                out.created(&c, "Rotated. New token");
                if date_only {
                    say!("(A date alone means 00:00 UTC, the start of that day.)");
                }
                rotated_note(&c, &a.id);
            })
        }
        TokenCommand::Usage(a) => usage(&client, &out, a).await,
    }
}

/// What became of the old token after a rotate.
fn rotated_note(c: &Created, old: &TokenId) {
    let now = jiff::Timestamp::now();
    match c.old.as_ref().and_then(|t| t.works_until(now)) {
        Some(until) => say!(
            "The old token {old} keeps working for API calls until {} (then it is revoked); it manages no tokens meanwhile.",
            when(Some(until), "")
        ),
        None => say!(
            "The old token {old} is revoked, and so is any value before it still in a rotation overlap."
        ),
    }
}

async fn change(
    client: &AdminClient,
    out: &Output,
    method: Method,
    id: &TokenId,
    suffix: &str,
    done: &str,
) -> u8 {
    let answer = client
        .call(method, &format!("/admin/v1/tokens/{id}{suffix}"))
        .await;
    out.finish(answer, |a: TokenAnswer| {
        let t = &a.token;
        say!(
            "Token {} ({}) is {}; state: {}.",
            t.id,
            t.name,
            done,
            t.state.as_str()
        );
    })
}

async fn list(client: &AdminClient, out: &Output, args: ListArgs) -> u8 {
    let mut params = vec![format!("limit={}", args.limit)];
    if let Some(ws) = &args.workspace {
        params.push(format!("workspace={}", encode(ws)));
    }
    if let Some(st) = args.state {
        let v = match st {
            StateArg::Enabled => "enabled",
            StateArg::Disabled => "disabled",
            StateArg::Expired => "expired",
            StateArg::Revoked => "revoked",
        };
        params.push(format!("state={v}"));
    }
    if let Some(k) = args.kind {
        let v = match k {
            TypeArg::Workspace => "workspace",
            TypeArg::Project => "project",
        };
        params.push(format!("type={v}"));
    }
    if let Some(within) = &args.expiring {
        params.push(format!("expiring={}", encode(within)));
    }
    if let Some(u) = &args.unused {
        params.push(format!("unused={}", encode(u)));
    }
    let (tokens, cursor) = match fetch_pages(
        client,
        out,
        "/admin/v1/tokens",
        &params,
        "tokens",
        args.cursor.clone(),
        args.all,
    )
    .await
    {
        Ok(found) => found,
        Err(code) => return code,
    };
    if out.json {
        say_json_page("tokens", tokens, cursor);
    } else {
        let tokens: Vec<TokenView> = match tokens.into_iter().map(serde_json::from_value).collect()
        {
            Ok(t) => t,
            Err(e) => {
                complain!("error: the admin API listed a token this CLI cannot read: {e}");
                return REFUSED;
            }
        };
        print_table(&tokens);
        if let Some(c) = cursor {
            say!("(more: --cursor {c}, or --all)");
        }
    }
    OK
}
