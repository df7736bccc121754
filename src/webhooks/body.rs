//! The JSON body of a webhook POST, built from an audit event: its id (the
//! audit position, the same on every retry), type, time, the token (id,
//! name, workspace, expiry), the actor, and the audit event itself. Pure:
//! built from what the audit event and the token's public record hold —
//! never a secret or a hash.

use jiff::Timestamp;
use serde::Serialize;

use crate::audit::AuditEvent;
use crate::token::TokenRecord;

/// What a receiver gets.
#[derive(Debug, Serialize)]
pub struct Body<'a> {
    /// The event id: its position in the audit log (`<ms>-<seq>`). The
    /// same on every retry and redelivery: a receiver drops a repeat.
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it happened (RFC 3339, to the second).
    pub time: Timestamp,
    pub token: TokenInfo<'a>,
    /// `admin`, `token:<id>`, or `gate` (the gate's own policies).
    pub actor: &'a str,
    /// `token.expiring`: `7d` or `1d`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<&'a str>,
    /// Why, when the actor said (auto-disable, leak, expiry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// The audit event, as `GET /admin/v1/audit` shows it.
    pub audit: &'a AuditEvent,
}

/// The token an event is about, as far as it is known now.
#[derive(Debug, Serialize)]
pub struct TokenInfo<'a> {
    pub id: &'a str,
    /// `null` when the record is gone (past `store.retention`).
    pub name: Option<String>,
    pub workspace_id: &'a str,
    pub expires_at: Option<Timestamp>,
    /// A rotate's successor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_token_id: Option<&'a str>,
}

/// The body of `event`, with `record` (the token's record now, if found)
/// for its name and expiry.
pub fn render(event: &AuditEvent, record: Option<&TokenRecord>) -> Vec<u8> {
    let body = Body {
        id: &event.id,
        kind: event.action.event_type(),
        time: event.time,
        token: TokenInfo {
            id: event.token_id.as_str(),
            name: record.map(|r| r.name.clone()).or_else(|| {
                event
                    .after
                    .get("name")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            }),
            workspace_id: &event.workspace_id,
            expires_at: record
                .and_then(|r| r.expires_at)
                .map(|t| Timestamp::from_second(t.as_second()).unwrap_or(t)),
            new_token_id: event.new_token_id.as_ref().map(|t| t.as_str()),
        },
        actor: &event.actor,
        within: event.within.as_deref(),
        reason: event.reason.as_deref(),
        audit: event,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}
