//! The flags the client commands share (`--admin-url`, `--admin-key`, the
//! admin TLS files, `--json`), the admin client they make, and the exit
//! codes. `serve` and `check-config` take none of them: they read the
//! config, not a running gate.
//!
//! Never prints the admin key, and never reads the store.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::admin::client::{AdminClient, ClientError, ClientTls};
use crate::admin::{KEY_ENV, KEY_FILE, read_key_file};
use crate::config::Loaded;
use crate::token::TokenId;
use crate::token::value::InvalidTokenId;

/// Exit codes (the root `--help` and docs/design.md § Command line list them).
/// 0: done (`explain`: allowed).
pub(super) const OK: u8 = 0;
/// 1: the server refused (a bad value, a token not found, a wrong admin key;
/// `explain`: denied).
pub(super) const REFUSED: u8 = 1;
/// 2: bad usage: flags, the config, no admin key to send.
pub(super) const USAGE: u8 = 2;
/// 3: no answer from the admin API (refused connection, timeout, TLS failure).
pub(super) const UNREACHABLE: u8 = 3;

/// The help heading of the admin API connection flags.
const CONNECTION: &str = "Admin API connection";

/// The flags of every command that talks to a running gate (`token …`,
/// `explain`, `roles`). Declared `global` so that, on `token`, they may
/// come before or after the token subcommand.
#[derive(Debug, Args)]
pub(super) struct Client {
    /// Machine-readable JSON output instead of tables.
    #[arg(long, global = true)]
    pub(super) json: bool,

    // Last: its heading holds for every flag after it.
    #[command(flatten)]
    pub(super) admin: Connection,
}

#[derive(Args)]
#[command(next_help_heading = CONNECTION)]
pub(super) struct Connection {
    /// Admin API of the gate. Default: http://<listen.admin> from the config
    /// (http://127.0.0.1:9091).
    #[arg(long, global = true, env = "HAWZU_GATE_ADMIN_URL", value_name = "URL")]
    pub(super) admin_url: Option<String>,

    /// Admin key, or a workspace token whose role has tokens:manage (it
    /// manages its own workspace's tokens). Default: $HAWZU_GATE_ADMIN_KEY,
    /// admin.key from the config, else <data_dir>/admin.key.
    #[arg(long, global = true, value_name = "KEY", env = KEY_ENV, hide_env_values = true)]
    pub(super) admin_key: Option<String>,

    /// CA (PEM) trusted for an https:// admin URL, beside the public roots.
    #[arg(long, global = true, env = "HAWZU_GATE_ADMIN_CA", value_name = "FILE")]
    pub(super) admin_ca: Option<PathBuf>,

    /// Client certificate (PEM) for an admin listener that requires mTLS.
    #[arg(
        long,
        global = true,
        env = "HAWZU_GATE_ADMIN_CERT",
        value_name = "FILE",
        requires = "admin_cert_key"
    )]
    pub(super) admin_cert: Option<PathBuf>,

    /// Private key (PEM) of --admin-cert.
    #[arg(
        long,
        global = true,
        env = "HAWZU_GATE_ADMIN_CERT_KEY",
        value_name = "FILE",
        requires = "admin_cert"
    )]
    pub(super) admin_cert_key: Option<PathBuf>,
}

/// Never shows the key, nor a password in the URL.
impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field(
                "admin_url",
                &self.admin_url.as_deref().map(crate::redact::redact_url),
            )
            .field("admin_key", &self.admin_key.as_ref().map(|_| "***"))
            .field("admin_ca", &self.admin_ca)
            .field("admin_cert", &self.admin_cert)
            .field("admin_cert_key", &self.admin_cert_key)
            .finish()
    }
}

/// The admin client for `global` and `loaded`, or the exit code of why not.
pub(super) fn client(global: &Connection, loaded: &Loaded) -> Result<AdminClient, u8> {
    if let Some(e) = unchosen_address(global, loaded) {
        complain!("error: {e}");
        return Err(USAGE);
    }
    let key = admin_key(global, loaded).map_err(|e| {
        complain!("error: {e}");
        USAGE
    })?;
    let tls = ClientTls {
        ca_file: global.admin_ca.clone(),
        identity: global.admin_cert.clone().zip(global.admin_cert_key.clone()),
    };
    let url = admin_url(global, loaded);
    let args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    for w in key_warnings(args, &url) {
        complain!("warning: {w}");
    }
    // The client certificate's key, held as the gate's own TLS keys are.
    if let Some(w) = global
        .admin_cert_key
        .as_deref()
        .and_then(|k| crate::config::exposed_file("--admin-cert-key", k))
    {
        complain!("warning: {w}");
    }
    AdminClient::new(&url, key, &tls).map_err(|e| {
        complain!("error: {e}");
        USAGE
    })
}

/// What to tell a user about how the admin key travels: given on the
/// command line (other users see it in `ps`, the shell keeps it in its
/// history), or about to cross a network in the clear (`http://` to a host
/// that is not this one).
fn key_warnings(args: impl Iterator<Item = String>, url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if args
        .into_iter()
        .any(|a| a == "--admin-key" || a.starts_with("--admin-key="))
    {
        out.push(format!(
            "--admin-key on the command line is visible to other users (ps) and kept in shell history; set ${KEY_ENV} or let the key file be read instead"
        ));
    }
    if let Ok(uri) = url.parse::<http::Uri>()
        && uri.scheme_str() == Some("http")
        && let Some(host) = uri.host()
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let local = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !local {
            out.push(format!(
                "the admin key goes to {host} over plain http://: anyone on the way can read it; put tls.admin on that listener and use https://"
            ));
        }
    }
    out
}

/// Why the admin address may not be used: it is another machine's, and it
/// comes from a `./hawzu-gate.toml` nobody named — a file in a cloned
/// repository or a shared folder would otherwise send the operator's key
/// (`$HAWZU_GATE_ADMIN_KEY`, kept exported) to an address of its writer's
/// choosing. Named (`--config`) or given (`--admin-url`), it is the
/// operator's choice; this machine's own addresses are always allowed.
fn unchosen_address(global: &Connection, loaded: &Loaded) -> Option<String> {
    if global.admin_url.is_some() || !loaded.origin.found_in_cwd {
        return None;
    }
    // Set by the environment (`HAWZU_GATE__LISTEN__ADMIN`): the operator's.
    if loaded
        .origin
        .env_vars
        .iter()
        .any(|v| v.eq_ignore_ascii_case("HAWZU_GATE__LISTEN__ADMIN"))
    {
        return None;
    }
    let addr = loaded.settings.listen.admin;
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        return None;
    }
    Some(format!(
        "the admin address {addr} comes from ./hawzu-gate.toml, found in the working directory, and is not a loopback address: the admin key is not sent where a file nobody named says. If it is your file, name it (--config ./hawzu-gate.toml) or pass --admin-url"
    ))
}

fn admin_url(global: &Connection, loaded: &Loaded) -> String {
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

fn admin_key(global: &Connection, loaded: &Loaded) -> Result<String, String> {
    if let Some(k) = global.admin_key.as_ref().filter(|k| !k.trim().is_empty()) {
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

/// The parser of a token id argument (`tok_…`): trims what a paste adds,
/// and refuses a token's secret value pasted there without showing it
/// (clap would echo an invalid value, and CI logs keep stderr).
#[derive(Debug, Clone, Copy)]
pub(super) struct TokenIdParser;

impl clap::builder::TypedValueParser for TokenIdParser {
    type Value = TokenId;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<TokenId, clap::Error> {
        let text = value.to_string_lossy();
        let text = text.trim();
        if let Ok(id) = TokenId::parse(text) {
            return Ok(id);
        }
        let name = arg.map_or_else(|| "<ID>".to_owned(), ToString::to_string);
        // Only what starts as an id is shown back: anything else may be a
        // secret under a prefix this command cannot know (`tokens.prefix`
        // is read after the arguments).
        let why = if text.starts_with("tok_") {
            format!("invalid value '{text}' for '{name}': {InvalidTokenId}")
        } else {
            format!(
                "{name} takes a token's id (tok_…); the value given is not one and is not shown \
                 here, in case it is a secret (keep those out of command lines). A token's id: \
                 `hawzu-gate token list`, or ask the proxy listener with the secret: \
                 curl -H \"Authorization: Bearer $TOKEN\" http://<listen.proxy>/.well-known/hawzu-token"
            )
        };
        Err(
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{why}\n"))
                .with_cmd(cmd),
        )
    }
}

/// The exit code of a call that got no answer.
pub(super) fn no_answer(e: &ClientError) -> u8 {
    match e {
        ClientError::Connect { .. } | ClientError::Timeout(_) => UNREACHABLE,
        ClientError::Url(_)
        | ClientError::UrlCredentials(_)
        | ClientError::Request(_)
        | ClientError::Tls(_)
        | ClientError::Key => USAGE,
        ClientError::NotJson { .. } => REFUSED,
    }
}

#[cfg(test)]
mod tests {
    use super::key_warnings;

    fn warned(args: &[&str], url: &str) -> Vec<String> {
        key_warnings(args.iter().map(|a| (*a).to_owned()), url)
    }

    #[test]
    fn the_parsed_command_line_never_shows_the_key() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "hawzu-gate",
            "token",
            "--admin-key",
            "hwzadm_s3cretkey",
            "list",
        ])
        .unwrap();
        let dump = format!("{cli:?}");
        assert!(!dump.contains("s3cretkey"), "{dump}");
    }

    #[test]
    fn a_key_on_the_command_line_or_in_the_clear_is_warned_about() {
        assert!(warned(&["token", "list"], "http://127.0.0.1:9091").is_empty());
        assert!(warned(&["token", "list"], "http://localhost:9091").is_empty());
        assert!(warned(&["token", "list"], "http://[::1]:9091").is_empty());
        assert!(warned(&["token", "list"], "https://gate.example:9091").is_empty());
        let w = warned(
            &["token", "list", "--admin-key", "k"],
            "http://127.0.0.1:9091",
        );
        assert!(w.len() == 1 && w[0].contains("command line"), "{w:?}");
        let w = warned(&["--admin-key=k", "roles"], "http://127.0.0.1:9091");
        assert_eq!(w.len(), 1, "{w:?}");
        let w = warned(&["roles"], "http://10.0.0.5:9091");
        assert!(w.len() == 1 && w[0].contains("10.0.0.5"), "{w:?}");
    }
}
