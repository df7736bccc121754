//! `token usage ID [--since 7d]`: a token's requests per hour, its last
//! clients and its last refusal, from `GET /admin/v1/tokens/{id}/usage`.
//! One admin API call; prints (text, or `--json` as the server answered).

use clap::Args;
use http::Method;

use crate::admin::client::AdminClient;
use crate::admin::wire::UsageAnswer;
use crate::token::TokenId;

use super::global::TokenIdParser;
use super::output::{Output, encode, print_indented, when};

#[derive(Debug, Args)]
pub(super) struct UsageArgs {
    /// The token id (tok_…).
    #[arg(value_name = "ID", value_parser = TokenIdParser)]
    id: TokenId,
    /// How far back: 24h, 7d, 2w, 90d (whole hours; at most
    /// usage.retention, default 90d).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_window)]
    since: String,
}

/// A length of time: `24h`, `7d`, `2w` (`m` is minutes here).
pub(super) fn parse_window(s: &str) -> Result<String, String> {
    humantime::parse_duration(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("`{s}` is not a length of time ({e}); write it like 24h, 7d or 2w"))
}

pub(super) async fn usage(client: &AdminClient, out: &Output, args: UsageArgs) -> u8 {
    let answer = client
        .call(
            Method::GET,
            &format!(
                "/admin/v1/tokens/{}/usage?since={}",
                args.id,
                encode(&args.since)
            ),
        )
        .await;
    out.finish(answer, |u: UsageAnswer| show(&u))
}

fn show(u: &UsageAnswer) {
    say!(
        "Usage of {} from {} to {}",
        u.token_id,
        when(Some(u.since), ""),
        when(Some(u.until), "")
    );
    say!("  allowed       {}", u.totals.allowed);
    say!("  refused       {}", u.totals.refused);
    match &u.last_refusal {
        Some(r) => say!("  last refusal  {} at {}", r.code, when(Some(r.at), "")),
        None => say!("  last refusal  -"),
    }
    say!("");
    say!("clients (most recent first)");
    if u.clients.is_empty() {
        say!("  (none seen)");
    } else {
        print_indented(
            "  ",
            &["ADDRESS", "USER AGENT", "FIRST SEEN", "LAST SEEN"],
            u.clients
                .iter()
                .map(|c| {
                    vec![
                        c.address.clone(),
                        if c.user_agent.is_empty() {
                            "-".to_owned()
                        } else {
                            c.user_agent.clone()
                        },
                        when(Some(c.first_seen), ""),
                        when(Some(c.last_seen), ""),
                    ]
                })
                .collect(),
        );
    }
    say!("");
    say!("hours with requests (UTC)");
    if u.hours.is_empty() {
        say!("  (no requests)");
    } else {
        print_indented(
            "  ",
            &["HOUR", "ALLOWED", "REFUSED"],
            u.hours
                .iter()
                .map(|h| {
                    vec![
                        when(Some(h.hour), ""),
                        h.allowed.to_string(),
                        h.refused.to_string(),
                    ]
                })
                .collect(),
        );
    }
}
