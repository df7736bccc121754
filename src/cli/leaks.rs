//! `hawzu-gate leaks …`: what an operator registers with a secret scanner.
//! `leaks pattern` prints the regular expression that matches this
//! deployment's tokens (every accepted prefix, from the config). Reads the
//! config only; never calls the admin API or the store.

use clap::{Args, Subcommand};

use crate::config::Loaded;
use crate::token::value::BODY_LEN;

/// `hawzu-gate leaks`.
#[derive(Debug, Args)]
pub struct LeaksArgs {
    #[command(subcommand)]
    command: LeaksCommand,
}

#[derive(Debug, Subcommand)]
enum LeaksCommand {
    /// Print the regular expression that matches this deployment's tokens
    /// (tokens.prefix and tokens.accepted_prefixes, then 36 base62
    /// characters), to register with GitHub secret scanning or another
    /// scanner. The last 6 characters are a CRC32 checksum: a scanner may
    /// check it to drop look-alikes.
    Pattern {
        /// The pattern and the prefixes as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `leaks` command; the exit code.
pub fn leaks(loaded: &Loaded, args: LeaksArgs) -> u8 {
    match args.command {
        LeaksCommand::Pattern { json } => {
            let prefixes = &loaded.policy.prefixes;
            let pattern = prefixes.pattern(BODY_LEN);
            if json {
                let all: Vec<&str> = prefixes.accepted().iter().map(|p| p.as_str()).collect();
                say!(
                    "{}",
                    serde_json::json!({
                        "pattern": pattern,
                        "prefix": prefixes.mint().as_str(),
                        "accepted_prefixes": all,
                    })
                );
            } else {
                say!("{pattern}");
            }
            0
        }
    }
}
