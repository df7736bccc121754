//! `explain`: why a token would be allowed or refused a request, as the
//! admin API's `POST /admin/v1/explain` tells it. One admin API call;
//! never reads the store.

use clap::Args;
use http::Method;

use crate::admin::wire::{ExplainRequest, Explained};
use crate::config::Loaded;
use crate::token::TokenId;

use super::global::{Client, OK, REFUSED, TokenIdParser, client};
use super::output::Output;

#[derive(Debug, Args)]
pub(super) struct ExplainArgs {
    /// The token id (tok_…). Left out: a request with no Hawzu token (a
    /// cookie, another bearer, nothing): refused, or passed on a public
    /// route or with policy.other_credentials = "pass".
    #[arg(long, value_name = "ID", value_parser = TokenIdParser)]
    token_id: Option<TokenId>,
    /// The request method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.
    #[arg(long, value_name = "M", value_parser = parse_method)]
    method: String,
    /// The request path, as the client sends it (`/api/v1/workspaces/…`).
    #[arg(long, value_name = "P", value_parser = parse_path)]
    path: String,
    /// The client's address, as the gate would work it out (the peer, or
    /// the X-Forwarded-For entry trusted_proxies leads to): needed for a
    /// token with --allow-from.
    #[arg(long = "client", value_name = "ADDR", value_parser = parse_addr)]
    client_addr: Option<std::net::IpAddr>,
    /// Exit 0 on a deny too (the verdict is still printed); without it a
    /// deny exits 1.
    #[arg(long)]
    exit_zero: bool,
    // Last: its heading holds for every flag after it.
    #[command(flatten)]
    client: Client,
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

fn parse_addr(s: &str) -> Result<std::net::IpAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an IP address; write it like 192.0.2.7 or 2001:db8::7"))
}

/// `explain`: why a token would be allowed or refused a request. Exits 1
/// on a deny unless `--exit-zero`.
pub(super) async fn explain(loaded: &Loaded, args: ExplainArgs) -> u8 {
    let client = match client(&args.client.admin, loaded) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let out = Output {
        json: args.client.json,
    };
    let body = ExplainRequest {
        token_id: args.token_id.as_ref().map(TokenId::to_string),
        method: args.method.clone(),
        path: args.path.clone(),
        client: args.client_addr.map(|ip| ip.to_string()),
    };
    let answer = client.send(Method::POST, "/admin/v1/explain", &body).await;
    // Read here as well as shown: `--json` prints the body as sent.
    // Only a deny exits 1: `allow` and `passed` (no Hawzu token, forwarded
    // for the API to judge) are not refusals.
    let denied = matches!(&answer, Ok((s, v)) if s.is_success() && v["decision"] == "deny");
    let code = out.finish(answer, |v: Explained| {
        let verdict = match &v.code {
            Some(code) => format!("deny: {code} ({})", v.status),
            // `passed: …` says why.
            None if v.decision == "passed" => v.steps.last().cloned().unwrap_or_default(),
            None => "allow".to_owned(),
        };
        say!("{verdict}  {} {}", args.method, args.path);
        // The last step repeats the verdict.
        let shown = v.steps.len().saturating_sub(1);
        for (i, step) in v.steps.iter().take(shown).enumerate() {
            say!("  {}. {}", i + 1, step);
        }
    });
    if code == OK && denied && !args.exit_zero {
        REFUSED
    } else {
        code
    }
}
