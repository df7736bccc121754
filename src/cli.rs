//! The command line: `serve`, `token …`, `check-config`.
//!
//! Token commands talk to the admin API of a running gate (never to the store
//! directly). Exit codes: 0 ok, 1 refused by the server (or the server could
//! not be reached), 2 bad usage (flags, config). Every error names the flag,
//! field or key at fault and says what would be accepted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `println!` that never panics: a closed pipe (`| head`) ends output quietly.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics.
macro_rules! complain {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::client::{AdminClient, ClientTls};
use crate::admin::{KEY_ENV, KEY_FILE, read_key_file};
use crate::config::{self, Loaded};
use crate::server::{Bound, check_tls, signals};
use crate::token::expiry::{EXPIRY_HELP, ExpirySpec};
use crate::token::{ProjectGrant, TokenId};

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 refused by the server (or server unreachable), 2 bad usage.
Docs: README.md and docs/ in the hawzu-gate repository.";

/// hawzu-gate: the authorization sidecar for the Hawzu API.
#[derive(Debug, Parser)]
#[command(name = "hawzu-gate", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Config file (TOML). Default: $HAWZU_GATE_CONFIG, else ./hawzu-gate.toml if present.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Admin API of the gate. Default: http://<listen.admin> from the config
    /// (http://127.0.0.1:9091).
    #[arg(long, global = true, env = "HAWZU_GATE_ADMIN_URL", value_name = "URL")]
    admin_url: Option<String>,

    /// Admin key. Default: $HAWZU_GATE_ADMIN_KEY, admin.key from the config,
    /// else <data_dir>/admin.key.
    #[arg(long, global = true, value_name = "KEY", env = KEY_ENV, hide_env_values = true)]
    admin_key: Option<String>,

    /// CA (PEM) trusted for an https:// admin URL, beside the public roots.
    #[arg(long, global = true, env = "HAWZU_GATE_ADMIN_CA", value_name = "FILE")]
    admin_ca: Option<PathBuf>,

    /// Client certificate (PEM) for an admin listener that requires mTLS.
    #[arg(
        long,
        global = true,
        env = "HAWZU_GATE_ADMIN_CERT",
        value_name = "FILE",
        requires = "admin_cert_key"
    )]
    admin_cert: Option<PathBuf>,

    /// Private key (PEM) of --admin-cert.
    #[arg(
        long,
        global = true,
        env = "HAWZU_GATE_ADMIN_CERT_KEY",
        value_name = "FILE",
        requires = "admin_cert"
    )]
    admin_cert_key: Option<PathBuf>,

    /// Machine-readable JSON output instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gate: forward-auth and admin listeners over the configured store.
    Serve,
    /// Create, list, show, disable, enable, revoke and rotate access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check the configuration and print the effective settings.
    CheckConfig,
    /// Explain why a token would be allowed or refused a request: the rule
    /// that matched, the role used, the permission needed.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// The token id (tok_…).
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    token_id: TokenId,
    /// The request method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.
    #[arg(long, value_name = "M", value_parser = parse_method)]
    method: String,
    /// The request path, as the client sends it (`/api/v1/workspaces/…`).
    #[arg(long, value_name = "P", value_parser = parse_path)]
    path: String,
}

fn parse_method(s: &str) -> Result<String, String> {
    const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let upper = s.to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!("use one of {}", METHODS.join(", ")))
    }
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err("a request path starts with `/`, like /api/v1/workspaces/ws_1/projects".into())
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token. Its value is printed once and can never be read again.
    Create(CreateArgs),
    /// List tokens, newest first.
    List(ListArgs),
    /// Show one token.
    Show(IdArg),
    /// Disable a token (refused until enabled again).
    Disable(IdArg),
    /// Enable a disabled token.
    Enable(IdArg),
    /// Revoke a token, permanently.
    Revoke(IdArg),
    /// Replace a token's value: a new token with the same name, scope and
    /// expiry; the old one is revoked at once.
    Rotate(IdArg),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["role", "project"])))]
struct CreateArgs {
    /// A descriptive name, e.g. "CI Runner" (1-128 characters).
    #[arg(long)]
    name: String,
    /// The workspace id the token belongs to.
    #[arg(long, value_name = "WS")]
    workspace: String,
    /// Workspace token: its workspace role (workspace_viewer, workspace_member,
    /// workspace_coordinator, workspace_manager, or a custom role).
    #[arg(long, value_name = "ROLE")]
    role: Option<String>,
    /// Project token: a project and its role; repeat for more projects.
    #[arg(long = "project", value_name = "ID=ROLE", value_parser = parse_grant)]
    project: Vec<ProjectGrant>,
    /// 1w, 1m, 6m, 1y, never, or an RFC 3339 date (2027-03-01 or 2027-03-01T12:00:00Z).
    #[arg(long, value_name = "WHEN", value_parser = parse_expiry)]
    expires: String,
    /// Who the token is created by (default: $USER).
    #[arg(long, value_name = "WHO")]
    created_by: Option<String>,
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
struct ListArgs {
    /// Only tokens of this workspace.
    #[arg(long, value_name = "WS")]
    workspace: Option<String>,
    /// Only tokens in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// Only tokens of this type.
    #[arg(long = "type", value_enum)]
    kind: Option<TypeArg>,
    /// Tokens per page (1-500).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
    limit: u16,
    /// Resume after a previous page (its next_cursor).
    #[arg(long)]
    cursor: Option<String>,
    /// Follow every page (people: the whole list; --json: one array).
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
struct IdArg {
    /// The token id (tok_…).
    #[arg(value_name = "ID", value_parser = parse_id)]
    id: TokenId,
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
        .map_err(|_| format!("use {EXPIRY_HELP}"))
}

fn parse_id(s: &str) -> Result<TokenId, String> {
    TokenId::parse(s).map_err(|e| e.to_string())
}

/// Exit codes.
const OK: u8 = 0;
const REFUSED: u8 = 1;
const USAGE: u8 = 2;

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    // Before anything can panic: a panic message never shows a secret.
    crate::telemetry::install_panic_hook();
    let cli = Cli::parse();
    ExitCode::from(run(cli))
}

fn run(cli: Cli) -> u8 {
    let file = config::config_path(cli.global.config.as_deref());
    let loaded = match config::load(file.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            complain!("error: {e}");
            return USAGE;
        }
    };
    match cli.command {
        Command::Serve => serve(&loaded),
        Command::CheckConfig => check_config(&loaded, cli.global.json),
        Command::Token(cmd) => client_runtime(token(&cli.global, &loaded, cmd)),
        Command::Explain(args) => client_runtime(explain(&cli.global, &loaded, args)),
    }
}

/// Runs a client command on a small runtime.
fn client_runtime(command: impl Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r.block_on(command),
        Err(e) => {
            complain!("error: cannot start the async runtime: {e}");
            REFUSED
        }
    }
}

/// The admin client for `global` and `loaded`, or the exit code of why not.
fn client(global: &Global, loaded: &Loaded) -> Result<AdminClient, u8> {
    let key = admin_key(global, loaded).map_err(|e| {
        complain!("error: {e}");
        USAGE
    })?;
    let tls = ClientTls {
        ca_file: global.admin_ca.clone(),
        identity: global.admin_cert.clone().zip(global.admin_cert_key.clone()),
    };
    AdminClient::new(&admin_url(global, loaded), key, &tls).map_err(|e| {
        complain!("error: {e}");
        USAGE
    })
}

async fn explain(global: &Global, loaded: &Loaded, args: ExplainArgs) -> u8 {
    let client = match client(global, loaded) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let out = Output { json: global.json };
    let body = json!({ "token_id": args.token_id, "method": args.method, "path": args.path });
    let answer = client
        .call(Method::POST, "/admin/v1/explain", Some(&body))
        .await;
    out.finish(answer, |v| {
        let verdict = match v["code"].as_str() {
            Some(code) => format!("deny: {code} ({})", v["status"]),
            None => "allow".to_owned(),
        };
        say!("{verdict}  {} {}", args.method, args.path);
        let steps = v["steps"].as_array().cloned().unwrap_or_default();
        // The last step repeats the verdict.
        for (i, step) in steps.iter().take(steps.len().saturating_sub(1)).enumerate() {
            say!("  {}. {}", i + 1, s(step));
        }
    })
}

fn serve(loaded: &Loaded) -> u8 {
    if let Err(e) = crate::telemetry::init(&loaded.settings.log) {
        complain!("error: {e}");
        return USAGE;
    }
    if let Some(f) = &loaded.origin.file {
        tracing::info!(file = %f.display(), "config file loaded");
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if loaded.settings.runtime.worker_threads > 0 {
        builder.worker_threads(loaded.settings.runtime.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            complain!("error: cannot start the async runtime: {e}");
            return REFUSED;
        }
    };
    runtime.block_on(async {
        match Bound::new(loaded).await {
            Ok(bound) => {
                bound.run(signals()).await;
                OK
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                complain!("error: {e}");
                USAGE
            }
        }
    })
}

fn check_config(loaded: &Loaded, as_json: bool) -> u8 {
    let s = &loaded.settings;
    if let Err(e) = check_tls(s) {
        complain!("error: {e}");
        return USAGE;
    }
    let mut effective = serde_json::to_value(s).unwrap_or(Value::Null);
    // Never print secrets.
    if s.admin.key.is_some() {
        effective["admin"]["key"] = json!("***");
    }
    effective["store"]["redis"]["url"] = json!(config::redact_url(&s.store.redis.url));
    if as_json {
        say!(
            "{}",
            serde_json::to_string_pretty(&json!({ "ok": true, "settings": effective }))
                .unwrap_or_default()
        );
        return OK;
    }
    let file = loaded.origin.file.as_ref().map_or_else(
        || "none (built-in defaults)".to_owned(),
        |f| f.display().to_string(),
    );
    say!("config OK");
    say!("  file: {file}");
    if !loaded.origin.env_vars.is_empty() {
        say!("  environment: {}", loaded.origin.env_vars.join(", "));
    }
    say!(
        "{}",
        serde_json::to_string_pretty(&effective).unwrap_or_default()
    );
    OK
}

// === token commands ===

fn admin_url(global: &Global, loaded: &Loaded) -> String {
    if let Some(u) = &global.admin_url {
        return u.clone();
    }
    let mut addr: SocketAddr = loaded.settings.listen.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if loaded.settings.tls.admin.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}")
}

fn admin_key(global: &Global, loaded: &Loaded) -> Result<String, String> {
    if let Some(k) = global.admin_key.as_ref().filter(|k| !k.is_empty()) {
        return Ok(k.clone());
    }
    if let Some(k) = &loaded.settings.admin.key {
        return Ok(k.clone());
    }
    let path = loaded.settings.data_dir.join(KEY_FILE);
    read_key_file(&path).map_err(|e| {
        format!(
            "no admin key: pass --admin-key, set {KEY_ENV}, or run where {} is readable ({e})",
            path.display()
        )
    })
}

async fn token(global: &Global, loaded: &Loaded, cmd: TokenCommand) -> u8 {
    let client = match client(global, loaded) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let out = Output { json: global.json };
    match cmd {
        TokenCommand::Create(args) => {
            let scope = match args.role {
                Some(role) => json!({ "type": "workspace", "role": role }),
                None => json!({ "type": "project", "projects": args.project }),
            };
            let created_by = args
                .created_by
                .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
                .unwrap_or_else(|| "admin".into());
            let body = json!({
                "name": args.name,
                "workspace_id": args.workspace,
                "scope": scope,
                "expires": args.expires,
                "created_by": created_by,
            });
            let answer = client
                .call(Method::POST, "/admin/v1/tokens", Some(&body))
                .await;
            out.finish(answer, |v| out.created(v, "Created"))
        }
        TokenCommand::List(args) => list(&client, &out, args).await,
        TokenCommand::Show(a) => {
            let answer = client
                .call(Method::GET, &format!("/admin/v1/tokens/{}", a.id), None)
                .await;
            out.finish(answer, |v| out.show(&v["token"]))
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
        TokenCommand::Rotate(a) => {
            let answer = client
                .call(
                    Method::POST,
                    &format!("/admin/v1/tokens/{}/rotate", a.id),
                    None,
                )
                .await;
            out.finish(answer, |v| {
                out.created(v, "Rotated; the old token is revoked. New token")
            })
        }
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
        .call(method, &format!("/admin/v1/tokens/{id}{suffix}"), None)
        .await;
    out.finish(answer, |v| {
        let t = &v["token"];
        say!(
            "Token {} ({}) is {}; state: {}.",
            s(&t["id"]),
            s(&t["name"]),
            done,
            s(&t["state"])
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
    let mut cursor = args.cursor.clone();
    let mut tokens: Vec<Value> = Vec::new();
    loop {
        let mut q = params.clone();
        if let Some(c) = &cursor {
            q.push(format!("cursor={}", encode(c)));
        }
        let answer = client
            .call(
                Method::GET,
                &format!("/admin/v1/tokens?{}", q.join("&")),
                None,
            )
            .await;
        let page = match answer {
            Ok((status, v)) if status.is_success() => v,
            other => return out.finish(other, |_| {}),
        };
        tokens.extend(page["tokens"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if !args.all || cursor.is_none() {
            break;
        }
    }
    if out.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&json!({ "tokens": tokens, "next_cursor": cursor }))
                .unwrap_or_default()
        );
    } else {
        print_table(&tokens);
        if let Some(c) = cursor {
            say!("(more: --cursor {c}, or --all)");
        }
    }
    OK
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// How answers are shown.
struct Output {
    json: bool,
}

impl Output {
    /// Prints an answer: `show` for success, errors on stderr. Returns the exit code.
    fn finish(
        &self,
        answer: Result<(StatusCode, Value), crate::admin::client::ClientError>,
        show: impl FnOnce(Value),
    ) -> u8 {
        match answer {
            Err(e) => {
                complain!("error: {e}");
                REFUSED
            }
            Ok((status, v)) if status.is_success() => {
                if self.json {
                    say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                } else {
                    show(v);
                }
                OK
            }
            Ok((status, v)) => {
                if self.json {
                    say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                }
                complain!(
                    "error: {} ({}, {})",
                    s(&v["message"]),
                    status.as_u16(),
                    s(&v["error"])
                );
                if let Some(fields) = v["fields"].as_object() {
                    for (field, msg) in fields {
                        complain!("  {}: {}", flag_for(field), s(msg));
                    }
                }
                REFUSED
            }
        }
    }

    fn created(&self, v: Value, verb: &str) {
        let t = &v["token"];
        say!("{verb} {} \"{}\"", s(&t["id"]), s(&t["name"]));
        say!("  workspace  {}", s(&t["workspace_id"]));
        say!("  scope      {}", scope_text(t));
        say!("  expires    {}", when(&t["expires_at"], "never"));
        say!("");
        say!("{}", s(&v["secret"]));
        say!("");
        say!("Copy this token now: it is shown only once and will not be shown again.");
    }

    fn show(&self, t: &Value) {
        let rows = [
            ("id", s(&t["id"]).to_owned()),
            ("name", s(&t["name"]).to_owned()),
            ("type", s(&t["scope"]["type"]).to_owned()),
            ("workspace", s(&t["workspace_id"]).to_owned()),
            ("scope", scope_text(t)),
            ("state", s(&t["state"]).to_owned()),
            ("created by", s(&t["created_by"]).to_owned()),
            ("created", when(&t["created_at"], "")),
            ("expires", when(&t["expires_at"], "never")),
            ("disabled", when(&t["disabled_at"], "-")),
            (
                "disabled by",
                t["disabled_by"].as_str().unwrap_or("-").to_owned(),
            ),
            ("revoked", when(&t["revoked_at"], "-")),
            ("last used", when(&t["last_used_at"], "never")),
            (
                "rotated from",
                t["rotated_from"].as_str().unwrap_or("-").to_owned(),
            ),
        ];
        for (k, v) in rows {
            say!("{k:<13} {v}");
        }
    }
}

/// `workspace_member` or `proj_a=project_manager, proj_b=project_viewer`.
fn scope_text(t: &Value) -> String {
    let scope = &t["scope"];
    match scope["type"].as_str() {
        Some("workspace") => s(&scope["role"]).to_owned(),
        _ => scope["projects"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| format!("{}={}", s(&p["project_id"]), s(&p["role"])))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
    }
}

/// A timestamp as `2027-03-01 12:00 UTC`, or `none` when null.
fn when(v: &Value, none: &str) -> String {
    match v.as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        None => none.to_owned(),
    }
}

fn print_table(tokens: &[Value]) {
    let header = [
        "ID",
        "NAME",
        "TYPE",
        "WORKSPACE",
        "ROLES",
        "STATE",
        "EXPIRES",
        "CREATED",
        "CREATED BY",
        "LAST USED",
    ];
    let rows: Vec<[String; 10]> = tokens
        .iter()
        .map(|t| {
            [
                s(&t["id"]).to_owned(),
                s(&t["name"]).to_owned(),
                s(&t["scope"]["type"]).to_owned(),
                s(&t["workspace_id"]).to_owned(),
                scope_text(t),
                s(&t["state"]).to_owned(),
                when(&t["expires_at"], "never"),
                when(&t["created_at"], ""),
                s(&t["created_by"]).to_owned(),
                when(&t["last_used_at"], "never"),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out
    };
    say!("{}", line(&header.map(str::to_owned)));
    for row in &rows {
        say!("{}", line(row));
    }
    if rows.is_empty() {
        say!("(no tokens)");
    }
}

/// The flag a server-side field error is about.
fn flag_for(field: &str) -> String {
    let map: BTreeMap<&str, &str> = BTreeMap::from([
        ("name", "--name"),
        ("workspace_id", "--workspace"),
        ("workspace", "--workspace"),
        ("scope", "--role/--project"),
        ("scope.role", "--role"),
        ("scope.projects", "--project"),
        ("expires", "--expires"),
        ("created_by", "--created-by"),
        ("state", "--state"),
        ("type", "--type"),
        ("cursor", "--cursor"),
        ("limit", "--limit"),
        ("id", "ID"),
        ("token_id", "--token-id"),
        ("method", "--method"),
        ("path", "--path"),
    ]);
    if let Some(f) = map.get(field) {
        return (*f).to_owned();
    }
    // scope.projects[1].role → --project #2 (role)
    if let Some(rest) = field.strip_prefix("scope.projects[")
        && let Some((n, what)) = rest.split_once("].")
        && let Ok(n) = n.parse::<usize>()
    {
        let what = if what == "project_id" { "ID" } else { "ROLE" };
        return format!("--project #{} ({what})", n + 1);
    }
    field.to_owned()
}
