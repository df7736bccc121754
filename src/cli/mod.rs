//! The command line: `serve`, `token …`, `check-config`.
//!
//! Token commands talk to the admin API of a running gate (never to the store
//! directly). Exit codes: 0 ok, 1 refused by the server (or the server could
//! not be reached), 2 bad usage (flags, config). Every error names the flag,
//! field or key at fault and says what would be accepted.
//!
//! This module parses the command line and hands off: `global` (common
//! flags, the admin client, exit codes), `serve` (run the gate, check the
//! config), `token` (token and explain commands, through the
//! admin client and the `admin::wire` structs), `output` (what a person or
//! a script sees). It never talks to the store.

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

mod global;
mod output;
mod serve;
mod token;

use crate::config;

use self::global::{Global, REFUSED, USAGE};
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
