//! What a person or a script sees of an admin answer: `--json` prints the
//! answer as the server sent it; otherwise the answer is read into its
//! `admin::wire` struct and shown as text. Errors go to stderr, with each
//! faulty field named by its flag.
//!
//! Prints and nothing else: no requests, no exit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::StatusCode;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admin::client::ClientError;
use crate::admin::wire::{Created, ErrorBody, ScopePermissions, TokenView};
use crate::token::{Scope, TokenState};

use super::global::{OK, REFUSED, no_answer};

/// How answers are shown.
#[derive(Debug, Clone, Copy)]
pub(super) struct Output {
    pub json: bool,
}

impl Output {
    /// Prints an answer: `show` its body (read as a `T`) for success, errors
    /// on stderr. Returns the exit code.
    pub fn finish<T: DeserializeOwned>(
        &self,
        answer: Result<(StatusCode, Value), ClientError>,
        show: impl FnOnce(T),
    ) -> u8 {
        match answer {
            Err(e) => {
                complain!("error: {e}");
                no_answer(&e)
            }
            Ok((status, v)) if status.is_success() => {
                if self.json {
                    say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    return OK;
                }
                match serde_json::from_value(v) {
                    Ok(body) => {
                        show(body);
                        OK
                    }
                    Err(e) => {
                        complain!(
                            "error: the admin API answered {status} with an unexpected body: {e}"
                        );
                        REFUSED
                    }
                }
            }
            Ok((status, v)) => {
                if self.json {
                    say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                }
                let e: ErrorBody = serde_json::from_value(v).unwrap_or_else(|_| ErrorBody {
                    error: String::new(),
                    message: String::new(),
                    fields: None,
                });
                // The fields follow: the API's pointer to them is not for
                // the command line.
                let message = e.message.replace("; see `fields`.", ":");
                complain!("error: {} ({}, {})", message, status.as_u16(), e.error);
                for (field, msg) in e.fields.iter().flatten() {
                    complain!("  {}: {}", flag_for(field), msg);
                }
                REFUSED
            }
        }
    }

    /// A token just made, and its secret, shown once.
    pub fn created(&self, c: &Created, verb: &str) {
        let t = &c.token;
        say!("{verb} {} \"{}\"", t.id, t.name);
        say!("  workspace  {}", t.workspace_id);
        say!("  scope      {}", scope_text(&t.scope));
        say!("  expires    {}", when(t.expires_at, "never"));
        // The limits set with it, when any: the holder's first request
        // from elsewhere or too early is refused.
        if let Some(at) = t.not_before {
            say!("  not before {}", when(Some(at), ""));
        }
        if !t.allow_from.is_empty() {
            say!("  allow from {}", t.allow_from.join(", "));
        }
        say!("");
        say!("{}", c.secret);
        say!("");
        say!("Copy this token now: it is shown only once and will not be shown again.");
    }

    pub fn show(&self, t: &TokenView) {
        let rows = [
            ("id", t.id.to_string()),
            ("name", t.name.clone()),
            (
                "description",
                t.description.clone().unwrap_or_else(|| "-".to_owned()),
            ),
            ("type", t.scope.kind().as_str().to_owned()),
            ("workspace", t.workspace_id.clone()),
            ("scope", scope_text(&t.scope)),
            ("state", state_text(t)),
            ("created by", t.created_by.clone()),
            ("created", when(Some(t.created_at), "")),
            ("expires", when(t.expires_at, "never")),
            ("not before", when(t.not_before, "-")),
            (
                "allow from",
                if t.allow_from.is_empty() {
                    "anywhere".to_owned()
                } else {
                    t.allow_from.join(", ")
                },
            ),
            (
                "limits by",
                t.limits_by.as_deref().unwrap_or("-").to_owned(),
            ),
            ("disabled", when(t.disabled_at, "-")),
            (
                "disabled by",
                t.disabled_by.as_deref().unwrap_or("-").to_owned(),
            ),
            (
                "revoked",
                match t.works_until(Timestamp::now()) {
                    Some(_) => format!("{} (end of the rotation overlap)", when(t.revoked_at, "-")),
                    None => when(t.revoked_at, "-"),
                },
            ),
            (
                "revoked by",
                t.revoked_by.as_deref().unwrap_or("-").to_owned(),
            ),
            ("last used", when(t.last_used_at, "never")),
            (
                "rotated from",
                t.rotated_from
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
            ),
            (
                "rotated to",
                t.rotated_to
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
            ),
        ];
        for (k, v) in rows {
            say!("{k:<13} {v}");
        }
    }
}

impl Output {
    /// What a token may do, per scope (after [`Output::show`]).
    pub fn permissions(&self, scopes: &[ScopePermissions]) {
        say!("");
        say!("permissions");
        for s in scopes {
            let place = match &s.project_id {
                Some(p) => format!("project {p}"),
                None => "workspace".to_owned(),
            };
            say!("  {place} ({})", s.role);
            if !s.role_defined {
                say!(
                    "    none: the config no longer defines role `{}`; the token is refused",
                    s.role
                );
            }
            for line in wrap(&s.permissions, 72) {
                say!("    {line}");
            }
        }
    }
}

/// `words` joined by spaces into lines of at most `width` characters.
pub(super) fn wrap(words: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for w in words {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + w.len() <= width => {
                line.push(' ');
                line.push_str(w);
            }
            _ => lines.push(w.clone()),
        }
    }
    lines
}

/// `workspace_member` or `proj_a=project_manager, proj_b=project_viewer`.
fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Workspace { role } => role.clone(),
        Scope::Project { projects } => projects
            .iter()
            .map(|p| format!("{}={}", p.project_id, p.role))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The state, and while a rotation's overlap runs, until when the old
/// value works: `rotated, works until 2027-03-01 12:00 UTC`.
fn state_text(t: &TokenView) -> String {
    match (t.state, t.works_until(Timestamp::now())) {
        (TokenState::Enabled, Some(until)) => {
            format!("rotated, works until {}", when(Some(until), ""))
        }
        (state, _) => state.as_str().to_owned(),
    }
}

/// A timestamp as every CLI output shows one: RFC 3339 in UTC, to the
/// second (`2027-03-01T12:00:00Z`, as the admin API sends it); `none` when
/// there is none.
pub(super) fn when(t: Option<Timestamp>, none: &str) -> String {
    match t {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => none.to_owned(),
    }
}

/// The tokens of a list, as a table.
pub(super) fn print_table(tokens: &[TokenView]) {
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
        "REQ 7D",
    ];
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.name.clone(),
                t.scope.kind().as_str().to_owned(),
                t.workspace_id.clone(),
                scope_text(&t.scope),
                state_text(t),
                when(t.expires_at, "never"),
                when(Some(t.created_at), ""),
                t.created_by.clone(),
                when(t.last_used_at, "never"),
                // Allowed and refused: every request made with the token.
                t.requests_7d
                    .flatten()
                    .map_or_else(|| "-".to_owned(), |c| (c.allowed + c.refused).to_string()),
            ]
        })
        .collect();
    print_rows(&header, rows, "(no tokens)");
}

/// A table as [`print_rows`], each line starting with `indent` (a table
/// inside a section).
pub(super) fn print_indented(indent: &str, header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = indent.to_owned();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out
    };
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    say!("{}", line(&header));
    for row in &rows {
        say!("{}", line(row));
    }
}

/// A table: `header`, then `rows` (cells of each row under the header's
/// columns, left-aligned); `empty` when there is no row.
pub(super) fn print_rows(header: &[&str], rows: Vec<Vec<String>>, empty: &str) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out
    };
    let head: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    say!("{}", line(&head));
    for row in &rows {
        say!("{}", line(row));
    }
    if rows.is_empty() {
        say!("{empty}");
    }
}

/// Percent-encodes a query value.
pub(super) fn encode(v: &str) -> String {
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
        ("not_before", "--not-before"),
        ("allow_from", "--allow-from"),
        ("overlap", "--overlap"),
        ("description", "--description"),
        ("created_by", "--created-by"),
        ("state", "--state"),
        ("type", "--type"),
        ("cursor", "--cursor"),
        ("limit", "--limit"),
        ("unused", "--unused"),
        ("since", "--since"),
        ("id", "ID"),
        ("token_id", "--token-id"),
        ("method", "--method"),
        ("path", "--path"),
        ("token", "--token"),
        ("since", "--since"),
    ]);
    if let Some(f) = map.get(field) {
        return (*f).to_owned();
    }
    // allow_from[1] → --allow-from #2
    if let Some(n) = field
        .strip_prefix("allow_from[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse::<usize>().ok())
    {
        return format!("--allow-from #{}", n + 1);
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
