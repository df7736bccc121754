//! `hawzu-gate audit`: who did what to which token, through
//! `GET /admin/v1/audit` — newest first, a table (or the answer as JSON),
//! one call per page (`--all`: every page).
//!
//! Never reads the store; an event never holds a secret to print.

use clap::Args;

use crate::admin::wire::AuditEvent;
use crate::audit::{Action, MAX_PAGE};
use crate::config::Loaded;
use crate::token::TokenId;

use super::global::{Client, OK, REFUSED, TokenIdParser, client};
use super::output::{Output, encode, print_rows, when};
use super::pages::{fetch_pages, say_json_page};

#[derive(Debug, Args)]
pub(super) struct AuditArgs {
    /// Only events about this token (tok_…; a rotate counts for both the
    /// old token and its successor).
    #[arg(long, value_name = "ID", value_parser = TokenIdParser)]
    token: Option<TokenId>,
    /// Only events of this workspace.
    #[arg(long, value_name = "WS")]
    workspace: Option<String>,
    /// Only events since then: a time back from now (30min, 24h, 7d, 2w,
    /// 1mo; `m` alone is refused: a minute or a month?), a date
    /// (2026-12-01, from 00:00 UTC) or an RFC 3339 instant.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Events per page (1-500).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=MAX_PAGE as i64))]
    limit: u16,
    /// Resume after a previous page (its next_cursor): older events.
    #[arg(long)]
    cursor: Option<String>,
    /// Follow every page (--json: one {"events":[…],"next_cursor":null}
    /// object with every event).
    #[arg(long)]
    all: bool,
    // Last: its heading holds for every flag after it.
    #[command(flatten)]
    client: Client,
}

/// `audit`: one admin API call per page.
pub(super) async fn audit(loaded: &Loaded, args: AuditArgs) -> u8 {
    let client = match client(&args.client.admin, loaded) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let out = Output {
        json: args.client.json,
    };
    let mut params = vec![format!("limit={}", args.limit)];
    if let Some(t) = &args.token {
        params.push(format!("token={t}"));
    }
    if let Some(ws) = &args.workspace {
        params.push(format!("workspace={}", encode(ws)));
    }
    if let Some(s) = &args.since {
        params.push(format!("since={}", encode(s)));
    }
    let (events, cursor) = match fetch_pages(
        &client,
        &out,
        "/admin/v1/audit",
        &params,
        "events",
        args.cursor.clone(),
        args.all,
    )
    .await
    {
        Ok(found) => found,
        Err(code) => return code,
    };
    if out.json {
        say_json_page("events", events, cursor);
        return OK;
    }
    let events: Vec<AuditEvent> = match events.into_iter().map(serde_json::from_value).collect() {
        Ok(e) => e,
        Err(e) => {
            complain!("error: the admin API sent an event this CLI cannot read: {e}");
            return REFUSED;
        }
    };
    print_rows(
        &[
            "TIME",
            "ACTION",
            "TOKEN",
            "WORKSPACE",
            "ACTOR",
            "CHANGED",
            "CLIENT",
            "REQUEST ID",
            "EVENT ID",
        ],
        events.iter().map(row).collect(),
        "(no events)",
    );
    if let Some(c) = cursor {
        say!("(more: --cursor {c}, or --all)");
    }
    OK
}

/// One event as a table row.
fn row(e: &AuditEvent) -> Vec<String> {
    vec![
        when(Some(e.time), ""),
        e.action.as_str().to_owned(),
        e.token_id.to_string(),
        e.workspace_id.clone(),
        e.actor.clone(),
        changed(e),
        e.client.clone().unwrap_or_else(|| "-".into()),
        e.request_id.clone().unwrap_or_else(|| "-".into()),
        e.id.clone(),
    ]
}

/// What changed, in a few words: `expires_at, name`; a rotate's successor.
fn changed(e: &AuditEvent) -> String {
    let fields = || e.after.keys().cloned().collect::<Vec<_>>().join(", ");
    match e.action {
        Action::Create => "created".into(),
        Action::Rotate => match &e.new_token_id {
            Some(new) => format!("new token {new}"),
            None => fields(),
        },
        _ if e.after.is_empty() => "(already so)".into(),
        _ => fields(),
    }
}
