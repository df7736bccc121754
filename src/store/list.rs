//! Listing: the query, the page, the cursor, and the one paging loop both
//! backends share.
//!
//! A backend supplies only the raw walk of its index — a batch of entries
//! older than a cursor, newest first, each with its record — and
//! [`paginate`] applies the filter, the limit and the scan bound. It never
//! does I/O of its own and knows no backend.

use std::future::Future;

use jiff::Timestamp;

use super::StoreError;
use crate::token::{TokenId, TokenKind, TokenRecord, TokenState};

/// Largest page a list may ask for.
pub const MAX_PAGE: usize = 500;
/// Page size when a list does not say.
pub const DEFAULT_PAGE: usize = 50;

/// Where a listing resumes: after the token with this creation time and id
/// (lists are newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_ms: u64,
    pub id: TokenId,
}

impl Cursor {
    /// The opaque form handed to clients: `<ms>.<id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_ms, self.id)
    }

    /// The position of `record` in the listing.
    pub fn of(record: &TokenRecord) -> Self {
        Self {
            created_ms: created_ms(record),
            id: record.id.clone(),
        }
    }

    /// Before every token created at `created_ms` (and after the newer
    /// ones): a position that names no token.
    pub fn at_instant(created_ms: u64) -> Self {
        Self {
            created_ms,
            id: TokenId::last(),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('.')?;
        Some(Self {
            created_ms: ms.parse().ok()?,
            id: TokenId::parse(id).ok()?,
        })
    }
}

/// Creation time in milliseconds since the epoch: the index score.
pub fn created_ms(record: &TokenRecord) -> u64 {
    u64::try_from(record.created_at.as_millisecond()).unwrap_or(0)
}

/// Which tokens a listing keeps. Applied while scanning, so a page holds up
/// to `limit` matching tokens.
#[derive(Debug, Clone, Copy)]
pub struct ListFilter {
    pub kind: Option<TokenKind>,
    pub state: Option<TokenState>,
    /// Only tokens unused since this instant: last used at or before it,
    /// or never used and created at or before it.
    pub unused_since: Option<Timestamp>,
    /// The instant the state is judged at.
    pub now: Timestamp,
    /// Only usable tokens that expire by this instant (`expiring=7d`).
    pub expiring_by: Option<Timestamp>,
}

impl ListFilter {
    /// A filter at `now` that keeps every token.
    pub fn all(now: Timestamp) -> Self {
        Self {
            kind: None,
            state: None,
            now,
            expiring_by: None,
            unused_since: None,
        }
    }

    pub fn matches(&self, record: &TokenRecord) -> bool {
        self.kind.is_none_or(|k| record.scope.kind() == k)
            && self.state.is_none_or(|st| record.state(self.now) == st)
            && self.expiring_by.is_none_or(|by| {
                record.state(self.now) == TokenState::Enabled
                    && record.expires_at.is_some_and(|e| e <= by)
            })
            && self.unused_since.is_none_or(|t| unused_since(record, t))
    }
}

/// Whether `record` went unused from `since` on: its last use (its
/// creation, if never used) is at or before `since`. A token created
/// recently and never used is unused since its creation.
pub fn unused_since(record: &TokenRecord, since: Timestamp) -> bool {
    record.last_used_at.unwrap_or(record.created_at) <= since
}

/// A listing request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub workspace: Option<String>,
    pub cursor: Option<Cursor>,
    pub limit: usize,
    pub filter: ListFilter,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub tokens: Vec<TokenRecord>,
    /// Present when more tokens may follow.
    pub next: Option<Cursor>,
}

/// Most index entries one list call scans for matches before it returns a
/// short page with a cursor (so a rare filter cannot make one call unbounded).
pub(crate) const MAX_SCAN: usize = 5_000;

/// One step of a backend's index walk: up to `batch` index entries older
/// than the cursor (all, with none), newest first, each with its record
/// (`None` when the index points at nothing). Fewer than `batch` entries
/// means the index ends there.
pub(crate) type Batch = Vec<(Cursor, Option<TokenRecord>)>;

/// A listed record, or `None` — left out, and said — when this gate cannot
/// read it (written by a newer gate during an upgrade, or damaged): one
/// such record must not fail every list of its workspace, nor stop the
/// sweeps that page through every token. The token itself is refused at
/// the doors (`store_unavailable`: its record cannot be judged).
pub(crate) fn readable(id: &str, raw: &[u8]) -> Option<TokenRecord> {
    TokenRecord::from_json(raw)
        .inspect_err(|e| {
            tracing::error!(
                token_id = %id,
                error = %e,
                "a stored token record cannot be read (written by a newer gate, or damaged): left out of the list"
            );
        })
        .ok()
}

/// A page of `query`, walking the index with `next_batch` (given the
/// position to continue after) in batches of `batch` entries: matches are
/// kept until `limit` of them, the end of the index, or [`MAX_SCAN`]
/// entries scanned, whichever comes first. The cursor handed back is the
/// last entry looked at, so the next call neither repeats nor skips one.
pub(crate) async fn paginate<F, Fut>(
    query: &ListQuery,
    batch: usize,
    mut next_batch: F,
) -> Result<Page, StoreError>
where
    F: FnMut(Option<Cursor>) -> Fut,
    Fut: Future<Output = Result<Batch, StoreError>>,
{
    let mut tokens = Vec::with_capacity(query.limit.min(batch));
    let mut position = query.cursor.clone();
    let mut scanned = 0;
    loop {
        let entries = next_batch(position.clone()).await?;
        let exhausted = entries.len() < batch;
        for (cursor, record) in entries {
            scanned += 1;
            position = Some(cursor);
            let Some(record) = record else { continue };
            if !query.filter.matches(&record) {
                continue;
            }
            tokens.push(record);
            if tokens.len() == query.limit {
                // More may follow; the client asks again from here.
                return Ok(Page {
                    tokens,
                    next: position,
                });
            }
        }
        if exhausted {
            return Ok(Page { tokens, next: None });
        }
        if scanned >= MAX_SCAN {
            return Ok(Page {
                tokens,
                next: position,
            });
        }
    }
}

#[cfg(test)]
#[path = "list_tests.rs"]
mod tests;
