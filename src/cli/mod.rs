//! The command line: `serve`, `check-config`, `token …`, `explain`, `roles`,
//! `audit`, `leaks pattern`.
//!
//! The client commands (`token`, `explain`, `roles`) talk to the admin API
//! of a running gate (never to the store directly). Exit codes: 0 ok, 1
//! refused by the server, 2 bad usage (flags, config), 3 the admin API
//! could not be reached ([`AFTER_HELP`]). Every error names the flag, field
//! or key at fault and says what would be accepted.
//!
//! This module parses the command line and hands off: `global` (the client
//! commands' flags, the admin client, exit codes), `serve` (run the gate,
//! check the config), `token` (token and explain commands, through the
//! admin client and the `admin::wire` structs), `roles` (the role table),
//! `audit` (the audit log), `leaks` (the pattern to register with a secret
//! scanner, from the config alone),
//! `output` (what a person or a script sees). It never talks to the store.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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

mod audit;
mod explain;
mod global;
mod leaks;
mod output;
mod pages;
mod roles;
mod serve;
mod token;
mod usage;

use std::path::PathBuf;

use clap::Args;

use crate::config;

use self::audit::{AuditArgs, audit};
use self::explain::{ExplainArgs, explain};
use self::global::{REFUSED, USAGE};
use self::leaks::{LeaksArgs, leaks};
use self::roles::{RolesArgs, roles};
use self::serve::{check_config, serve};
use self::token::{TokenArgs, token};

/// The root `--help`'s closing words: exit codes and time format.
pub const AFTER_HELP: &str = "\
Exit codes (token, explain, roles, audit):
  0  done (explain: the request would be allowed or passed)
  1  the server refused: a bad value, a token not found, a wrong admin key
     (explain: the request would be denied; --exit-zero turns that into 0)
  2  bad usage: a flag, the config, no admin key to send
  3  no answer from the admin API: connection refused, timeout, TLS failure
serve and check-config: 0 ok (serve: stopped by a signal), 2 the config is
refused or a listener cannot start (the message names the key).

Times are shown in UTC as RFC 3339 to the second (2027-03-01T12:00:00Z),
in tables and in --json alike.
Docs: README.md and docs/ in the hawzu-gate repository.";

/// What `serve --help` says beyond its one line: every listener.
const SERVE_ABOUT: &str = "\
Run the gate until SIGTERM or SIGINT (SIGHUP reloads rules, roles and
certificates). Addresses come from [listen] in the config, TLS from [tls];
every default is on 127.0.0.1 only.

Listeners:
  proxy  127.0.0.1:8080  reverse proxy: checks the access token, then forwards
                         the request to upstream.url with X-Hawzu-* identity
  auth   127.0.0.1:8081  forward auth: /auth/nginx (nginx auth_request),
                         /auth/traefik (Traefik ForwardAuth, Caddy forward_auth),
                         /envoy/<path> (Envoy HTTP ext_authz)
  grpc   127.0.0.1:9001  Envoy ext_authz (gRPC, envoy.service.auth.v3)
  ops    127.0.0.1:9090  /metrics (Prometheus), /healthz, /readyz
  admin  127.0.0.1:9091  the admin API that token, explain and roles call;
                         its key is admin.key, else <data_dir>/admin.key
                         (written on first start, mode 0600); with
                         admin.console = true, also the token console in a
                         browser at /console/
  leaks  off             leaked-token reports, only when listen.leaks is set:
                         /v1/leaks/github (GitHub secret scanning, signed),
                         /v1/leaks (anyone who found a token); meant to be
                         reachable from the internet, unlike admin

Tokens live in the store (store.backend: embedded under data_dir, or redis).
`hawzu-gate check-config` shows the effective settings first.";

/// hawzu-gate: the authorization sidecar for the Hawzu API.
#[derive(Debug, Parser)]
#[command(name = "hawzu-gate", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Config file (TOML). Default: $HAWZU_GATE_CONFIG, else ./hawzu-gate.toml if present
    /// (refused when another user may have put it there; name it to use it).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gate: the proxy, forward-auth, gRPC, ops and admin listeners.
    #[command(long_about = SERVE_ABOUT)]
    Serve,
    /// Create, list, show, disable, enable, revoke and rotate access tokens.
    Token(TokenArgs),
    /// Check the configuration and print the effective settings.
    CheckConfig(CheckConfigArgs),
    /// Explain why a token would be allowed or refused a request: the rule
    /// that matched, the role used, the permission needed. Exits 1 on deny.
    Explain(ExplainArgs),
    /// List every role (built-in and from [roles]) with its permissions.
    Roles(RolesArgs),
    /// The audit log: who created, updated, rotated, disabled, enabled or
    /// revoked which token, when, from where. Newest first.
    Audit(AuditArgs),
    /// Leaked tokens: `leaks pattern` prints the regular expression to
    /// register with GitHub secret scanning (from tokens.prefix and
    /// tokens.accepted_prefixes).
    Leaks(LeaksArgs),
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    /// The effective settings as JSON.
    #[arg(long)]
    json: bool,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    // Before anything can panic: a panic message never shows a secret.
    crate::telemetry::install_panic_hook();
    let cli = Cli::parse();
    ExitCode::from(run(cli))
}

fn run(cli: Cli) -> u8 {
    let file = config::config_path(cli.config.as_deref());
    let found_in_cwd = config::config_found_in_cwd(cli.config.as_deref());
    // A file nobody named may be another user's: it would choose where the
    // admin key goes, which key file is read and, for `serve`, the key and
    // rules themselves.
    if found_in_cwd
        && let Some(path) = &file
        && let Some(why) = crate::files::unclaimed(path)
    {
        complain!(
            "error: {} was found in the working directory, but {why}: another user may have put it there, and it is not read. If you trust it, name it (--config {}) or fix its ownership and mode",
            path.display(),
            path.display()
        );
        return USAGE;
    }
    let loaded = match config::load(file.as_deref()) {
        Ok(mut l) => {
            l.origin.found_in_cwd = found_in_cwd;
            l
        }
        Err(e) => {
            complain!("error: {e}");
            return USAGE;
        }
    };
    match cli.command {
        Command::Serve => serve(&loaded),
        Command::CheckConfig(args) => check_config(&loaded, args.json),
        Command::Token(args) => client_runtime(token(&loaded, args)),
        Command::Explain(args) => client_runtime(explain(&loaded, args)),
        Command::Roles(args) => client_runtime(roles(&loaded, args)),
        Command::Audit(args) => client_runtime(audit(&loaded, args)),
        Command::Leaks(args) => leaks(&loaded, args),
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
