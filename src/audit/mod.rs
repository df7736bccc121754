//! The audit log's event: who did what to which token, when, from where,
//! and what changed ([`AuditEvent`]); the position of an event in the log
//! ([`Position`], also its id); and what a query of the log asks
//! ([`AuditQuery`]).
//!
//! Pure: no I/O (the stores keep events, `store::AuditLog`; the admin API
//! writes and reads them). An event never holds a secret or a hash: what
//! it shows of a token is the allow-list of public fields in
//! [`public_fields`], so a field added to the record later is left out
//! until someone decides it may be shown.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::token::{Scope, TokenId, TokenRecord};

/// How long after a change a repeat by the same caller may be the retry of
/// a try whose answer was lost (a timeout after the store took it).
pub const LATE_WINDOW: SignedDuration = SignedDuration::from_secs(3600);

/// Whether a change found made already — its state stamped `at` by `by` —
/// may be the earlier try of `caller` (a label, as `by` holds it) whose
/// answer was lost after the store took it, and whose event was therefore
/// never written: the caller's own, and recent. Such a repeat writes the
/// event under the change's claim (`TokenCache::record_change`).
pub fn late_repeat(at: Option<Timestamp>, by: Option<&str>, caller: &str, now: Timestamp) -> bool {
    at.is_some_and(|at| at <= now && now.duration_since(at) <= LATE_WINDOW) && by == Some(caller)
}

#[cfg(test)]
mod tests;

/// Largest page a query may ask for.
pub const MAX_PAGE: usize = 500;
/// Page size when a query does not say.
pub const DEFAULT_PAGE: usize = 50;
/// Most events one query scans for matches before it returns a short page
/// with a cursor (so a rare filter cannot make one call unbounded).
pub const MAX_SCAN: usize = 5_000;
/// `audit.max_events` when the config does not say.
pub const DEFAULT_MAX_EVENTS: u64 = 1_000_000;

/// What was done. Every admin change of a token is one of these; the last
/// two are done by the gate itself (unused-token policy) or reported to it
/// (a leaked secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Rotate,
    Disable,
    Enable,
    Revoke,
    /// Disabled by the gate's own policy (unused for too long).
    AutoDisable,
    /// A leak of the token's secret was reported (and acted on).
    LeakReport,
    /// The gate noticed that a token expires soon (within 7 days, or 1
    /// day): written once per token, window and expiry across a fleet,
    /// only while a webhook subscribes to `token.expiring`.
    ExpiryNotice,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Create,
        Action::Update,
        Action::Rotate,
        Action::Disable,
        Action::Enable,
        Action::Revoke,
        Action::AutoDisable,
        Action::LeakReport,
        Action::ExpiryNotice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Rotate => "rotate",
            Action::Disable => "disable",
            Action::Enable => "enable",
            Action::Revoke => "revoke",
            Action::AutoDisable => "auto_disable",
            Action::LeakReport => "leak_report",
            Action::ExpiryNotice => "expiry_notice",
        }
    }

    /// The webhook event type of this action (`token.created`, …): what a
    /// `[[webhooks]]` entry subscribes to in `events`.
    pub fn event_type(self) -> &'static str {
        match self {
            Action::Create => "token.created",
            Action::Update => "token.updated",
            Action::Rotate => "token.rotated",
            Action::Disable => "token.disabled",
            Action::Enable => "token.enabled",
            Action::Revoke => "token.revoked",
            Action::AutoDisable => "token.auto_disabled",
            Action::LeakReport => "token.leaked",
            Action::ExpiryNotice => "token.expiring",
        }
    }
}

/// Every webhook event type, in [`Action::ALL`] order.
pub const EVENT_TYPES: [&str; 9] = [
    "token.created",
    "token.updated",
    "token.rotated",
    "token.disabled",
    "token.enabled",
    "token.revoked",
    "token.auto_disabled",
    "token.leaked",
    "token.expiring",
];

/// The windows of expiry notices (`within`), narrowest first, in days.
pub const NOTICE_WINDOWS: [(&str, i64); 2] = [("1d", 1), ("7d", 7)];

/// Where an event sits in the log, and its id: `<ms>-<seq>`, the Redis
/// stream entry id (the embedded store makes the same shape). Unique in
/// one log, ordered by (ms, seq): later events have greater positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub ms: u64,
    pub seq: u64,
}

impl Position {
    /// The first position at or after `t`.
    pub fn at(t: Timestamp) -> Self {
        Self {
            ms: u64::try_from(t.as_millisecond()).unwrap_or(0),
            seq: 0,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why a position (an event id, a cursor) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not an event position (`<ms>-<seq>`, as in an event id or next_cursor)")]
pub struct BadPosition;

impl FromStr for Position {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, BadPosition> {
        let (ms, seq) = s.split_once('-').ok_or(BadPosition)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(BadPosition);
        }
        Ok(Self {
            ms: ms.parse().map_err(|_| BadPosition)?,
            seq: seq.parse().map_err(|_| BadPosition)?,
        })
    }
}

/// Public fields of a token, by name: what an event shows before and after.
pub type Fields = BTreeMap<String, Value>;

/// Who acted and from where: the admin API's caller, client address and
/// request id; or the gate itself (no client, no request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `admin` (the admin key), `token:<id>` (a `tokens:manage` caller),
    /// or what acted on its own (`gate`, a leak reporter's name).
    pub actor: String,
    pub client: Option<String>,
    pub request_id: Option<String>,
}

impl Origin {
    /// Something that acted without an admin request (the gate's policy, a
    /// leak report's reporter).
    pub fn system(actor: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            client: None,
            request_id: None,
        }
    }
}

/// One entry of the audit log. Times are whole seconds (RFC 3339, as the
/// admin API shows every time); `before`/`after` hold only the public
/// fields that changed (all of them, in `after`, for a create).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The event's position in the log (`<ms>-<seq>`), set by the store:
    /// empty until written, and not stored inside the event.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub time: Timestamp,
    pub action: Action,
    /// `admin`, `token:<id>`, or what acted on its own (`gate`, a reporter).
    pub actor: String,
    /// The token acted on (a rotate: the old token).
    pub token_id: TokenId,
    pub workspace_id: String,
    /// The token's scope (which never changes, a rotate's successor
    /// included): what the admin API judges a token caller's reach by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// A rotate's successor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_token_id: Option<TokenId>,
    /// A rotate's successor whole, as a create's `after` shows a new token
    /// (its expiry, creator, limits): a rotate makes a token, and this is
    /// its record in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_token: Option<Fields>,
    pub before: Fields,
    pub after: Fields,
    /// The admin API client's address; `null` for the gate's own actions.
    pub client: Option<String>,
    /// The admin request's `X-Request-Id`; `null` for the gate's own actions.
    pub request_id: Option<String>,
    /// Why, when the actor says (an auto-disable's policy, a leak's source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An expiry notice's window: `7d` or `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
}

impl AuditEvent {
    fn new(action: Action, origin: &Origin, now: Timestamp, token: &TokenRecord) -> Self {
        Self {
            id: String::new(),
            time: whole_second(now),
            action,
            actor: origin.actor.clone(),
            token_id: token.id.clone(),
            workspace_id: token.workspace_id.clone(),
            scope: Some(token.scope.clone()),
            new_token_id: None,
            new_token: None,
            before: Fields::new(),
            after: Fields::new(),
            client: origin.client.clone(),
            request_id: origin.request_id.clone(),
            reason: None,
            within: None,
        }
    }

    /// A token was created: `after` shows it whole.
    pub fn created(origin: &Origin, now: Timestamp, record: &TokenRecord) -> Self {
        Self {
            after: public_fields(record),
            ..Self::new(Action::Create, origin, now, record)
        }
    }

    /// An update, disable, enable or revoke of a token: what changed. (An
    /// action that found the token already as asked changed nothing and
    /// is no event: the admin API writes none.)
    pub fn changed(
        action: Action,
        origin: &Origin,
        now: Timestamp,
        before: &TokenRecord,
        after: &TokenRecord,
    ) -> Self {
        let (b, a) = diff(before, after);
        Self {
            before: b,
            after: a,
            ..Self::new(action, origin, now, after)
        }
    }

    /// A rotate: the old token's change (its `revoked_at`, `rotated_to`),
    /// its successor's id, and the successor whole (`new_token`).
    pub fn rotated(
        origin: &Origin,
        now: Timestamp,
        old_before: &TokenRecord,
        old_after: &TokenRecord,
        new: &TokenRecord,
    ) -> Self {
        Self {
            new_token_id: Some(new.id.clone()),
            new_token: Some(public_fields(new)),
            ..Self::changed(Action::Rotate, origin, now, old_before, old_after)
        }
    }

    /// The gate disabled a token on its own (the unused-token policy):
    /// `actor` names the policy's doer (`gate`), `reason` the rule.
    pub fn auto_disabled(
        now: Timestamp,
        before: &TokenRecord,
        after: &TokenRecord,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::changed(
                Action::AutoDisable,
                &Origin::system("gate"),
                now,
                before,
                after,
            )
        }
    }

    /// A leak of the token's secret was reported by `origin` (a scanner's
    /// callback, an operator) and acted on (`before` → `after`, e.g.
    /// revoked); `reason` says where it was found. Never the secret.
    pub fn leak_reported(
        origin: &Origin,
        now: Timestamp,
        before: &TokenRecord,
        after: &TokenRecord,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::changed(Action::LeakReport, origin, now, before, after)
        }
    }

    /// The gate noticed that `record` expires within `within` (`7d`,
    /// `1d`): actor `gate`, nothing changed, the expiry in `reason`.
    pub fn expiry_notice(now: Timestamp, record: &TokenRecord, within: &str) -> Self {
        let at = record
            .expires_at
            .map_or_else(|| "never".to_owned(), |t| whole_second(t).to_string());
        Self {
            reason: Some(format!("expires at {at}, within {within}")),
            within: Some(within.to_owned()),
            ..Self::new(Action::ExpiryNotice, &Origin::system("gate"), now, record)
        }
    }

    /// Whether the event is about token `id` (acted on, or a rotate's
    /// successor).
    pub fn concerns(&self, id: &TokenId) -> bool {
        self.token_id == *id || self.new_token_id.as_ref() == Some(id)
    }

    /// The stored form: JSON without the id (the store's position is it).
    pub fn to_stored(&self) -> Vec<u8> {
        let mut stored = self.clone();
        stored.id.clear();
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// The workspace of a stored event (the JSON of [`AuditEvent::to_stored`]),
    /// read without the rest: what the stores index it under.
    pub fn stored_workspace(raw: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct Only {
            workspace_id: String,
        }
        serde_json::from_slice::<Only>(raw)
            .ok()
            .map(|o| o.workspace_id)
    }

    /// An event read back from the store at `position`.
    pub fn from_stored(position: Position, raw: &[u8]) -> Result<Self, String> {
        let mut e: Self = serde_json::from_slice(raw)
            .map_err(|e| format!("audit event {position} cannot be read: {e}"))?;
        e.id = position.to_string();
        Ok(e)
    }
}

/// `t` truncated to its second.
fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The fields of a record an event may show, times to the second. An
/// allow-list: the record holds no secret today, and a field added to it
/// is not shown until added here. `last_used_at` is left out (no admin
/// action changes it).
pub fn public_fields(r: &TokenRecord) -> Fields {
    let time = |t: Option<Timestamp>| t.map_or(Value::Null, |t| whole_second(t).to_string().into());
    let text = |s: Option<&str>| s.map_or(Value::Null, |s| s.into());
    let id = |t: Option<&TokenId>| t.map_or(Value::Null, |t| t.as_str().into());
    Fields::from([
        ("name".into(), r.name.clone().into()),
        ("description".into(), text(r.description.as_deref())),
        ("workspace_id".into(), r.workspace_id.clone().into()),
        (
            "scope".into(),
            serde_json::to_value(&r.scope).unwrap_or_default(),
        ),
        ("created_by".into(), r.created_by.clone().into()),
        ("created_at".into(), time(Some(r.created_at))),
        ("expires_at".into(), time(r.expires_at)),
        ("not_before".into(), time(r.not_before)),
        ("limits_by".into(), text(r.limits_by.as_deref())),
        (
            "allow_from".into(),
            r.allow_from
                .iter()
                .map(|n| Value::from(n.to_string()))
                .collect::<Vec<_>>()
                .into(),
        ),
        ("disabled_at".into(), time(r.disabled_at)),
        ("disabled_by".into(), text(r.disabled_by.as_deref())),
        ("revoked_at".into(), time(r.revoked_at)),
        ("revoked_by".into(), text(r.revoked_by.as_deref())),
        ("rotated_from".into(), id(r.rotated_from.as_ref())),
        ("rotated_to".into(), id(r.rotated_to.as_ref())),
    ])
}

/// The public fields that differ between two versions of a record: their
/// values before, and after.
pub fn diff(before: &TokenRecord, after: &TokenRecord) -> (Fields, Fields) {
    let b = public_fields(before);
    let mut a = public_fields(after);
    let mut was = Fields::new();
    a.retain(|k, v| {
        let old = b.get(k).cloned().unwrap_or(Value::Null);
        if old == *v {
            return false;
        }
        was.insert(k.clone(), old);
        true
    });
    (was, a)
}

/// What a query of the log asks: newest first, from `cursor` (exclusive)
/// back to `since` (inclusive), the events matching every filter given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Events about this token (acted on, or a rotate's successor).
    pub token: Option<TokenId>,
    pub workspace: Option<String>,
    pub since: Option<Timestamp>,
    /// Continue before this position (a previous page's `next_cursor`).
    pub cursor: Option<Position>,
    pub limit: usize,
    /// Which events the asker may see (a token caller: those of tokens it
    /// may act on); applied while scanning, so that a page fills with them
    /// and its cursor is one of them.
    pub visible: Visible,
}

/// A predicate over events: who may see which ([`Visible::all`]: every
/// one). Queries compare equal whatever it is.
#[derive(Clone, Default)]
pub struct Visible(Option<Arc<KeepsEvent>>);

/// The predicate [`Visible`] holds.
type KeepsEvent = dyn Fn(&AuditEvent) -> bool + Send + Sync;

impl Visible {
    /// Every event.
    pub fn all() -> Self {
        Self(None)
    }

    /// The events `f` keeps.
    pub fn only(f: impl Fn(&AuditEvent) -> bool + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    fn keeps(&self, e: &AuditEvent) -> bool {
        self.0.as_ref().is_none_or(|f| f(e))
    }
}

impl std::fmt::Debug for Visible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Visible(some)"
        } else {
            "Visible(all)"
        })
    }
}

impl PartialEq for Visible {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Visible {}

impl AuditQuery {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.token.as_ref().is_none_or(|t| e.concerns(t))
            && self
                .workspace
                .as_deref()
                .is_none_or(|w| e.workspace_id == w)
            && self.visible.keeps(e)
    }

    /// The oldest position the query reaches.
    pub fn floor(&self) -> Position {
        self.since.map_or(Position { ms: 0, seq: 0 }, Position::at)
    }
}

/// One page of events, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Present when more events may follow (older ones).
    pub next: Option<Position>,
}

/// Collects a page from a walk of the log, newest first: each entry is
/// looked at, matching ones kept until `limit`, at most [`MAX_SCAN`]
/// looked at. `Some(page)` when the page is done; `None` to be fed more.
#[derive(Debug)]
pub struct PageBuilder<'q> {
    query: &'q AuditQuery,
    events: Vec<AuditEvent>,
    last: Option<Position>,
    scanned: usize,
}

impl<'q> PageBuilder<'q> {
    pub fn new(query: &'q AuditQuery) -> Self {
        Self {
            query,
            events: Vec::with_capacity(query.limit.min(64)),
            last: None,
            scanned: 0,
        }
    }

    /// Where the walk continues (before this position), if it has begun.
    pub fn position(&self) -> Option<Position> {
        self.last.or(self.query.cursor)
    }

    /// Looks at one entry; true when the page is full or the scan bound
    /// reached (then [`PageBuilder::cut`] gives the page with a cursor).
    pub fn push(&mut self, position: Position, event: AuditEvent) -> bool {
        self.scanned += 1;
        self.last = Some(position);
        if self.query.matches(&event) {
            self.events.push(event);
        }
        self.events.len() >= self.query.limit || self.scanned >= MAX_SCAN
    }

    /// Passes a position whose event is gone (an index entry the log has
    /// trimmed): counted toward the scan bound, as an entry looked at.
    pub fn pass(&mut self, position: Position) -> bool {
        self.scanned += 1;
        self.last = Some(position);
        self.scanned >= MAX_SCAN
    }

    /// The page, with a cursor: more may follow.
    pub fn cut(self) -> AuditPage {
        AuditPage {
            events: self.events,
            next: self.last,
        }
    }

    /// The page at the end of the log: nothing follows.
    pub fn end(self) -> AuditPage {
        AuditPage {
            events: self.events,
            next: None,
        }
    }
}
