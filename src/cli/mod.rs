//! The command line: `serve`, `token …`, `check-config`.
//!
//! Token commands talk to the admin API of a running gate (never to the store
//! directly). Exit codes: 0 ok, 1 refused by the server (or the server could
//! not be reached), 2 bad usage (flags, config). Every error names the flag,
//! field or key at fault and says what would be accepted.
//!
//! This module parses the command line and hands off: `serve` (run the gate,
//! check the config), `token` (token and explain commands, through the
//! admin client and the `admin::wire` structs), `output` (what a person or
//! a script sees). It never talks to the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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

mod output;
mod serve;
mod token;

use crate::admin::client::{AdminClient, ClientTls};
use crate::admin::{KEY_ENV, KEY_FILE, read_key_file};
use crate::config::{self, Loaded};

use self::serve::{check_config, serve};
use self::token::{ExplainArgs, TokenCommand, explain, token};

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
