//! The shared paging loop against an in-memory index: limit, filter, the
//! end of the index, holes in it, and the scan bound.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::cell::Cell;

use jiff::Timestamp;

use super::*;
use crate::token::{Scope, TokenId, TokenRecord};

/// Index entries newest first: (created ms, record or a hole).
fn index(
    n: u64,
    kind_of: impl Fn(u64) -> Option<&'static str>,
) -> Vec<(Cursor, Option<TokenRecord>)> {
    (0..n)
        .rev()
        .map(|ms| {
            let id = TokenId::generate().unwrap();
            let record = kind_of(ms).map(|role| TokenRecord {
                id: id.clone(),
                name: format!("t{ms}"),
                ..TokenRecord::sample(
                    Scope::Workspace { role: role.into() },
                    Timestamp::from_millisecond(i64::try_from(ms).unwrap()).unwrap(),
                )
            });
            (Cursor { created_ms: ms, id }, record)
        })
        .collect()
}

fn query(limit: usize, cursor: Option<Cursor>, kind: Option<TokenKind>) -> ListQuery {
    ListQuery {
        workspace: None,
        cursor,
        limit,
        filter: ListFilter {
            kind,
            state: None,
            unused_since: None,
            now: Timestamp::now(),
            expiring_by: None,
        },
    }
}

/// Walks `entries` as a backend would: `batch` entries after the cursor.
/// Counts the batches asked for in `calls`.
async fn page(
    entries: &[(Cursor, Option<TokenRecord>)],
    q: &ListQuery,
    batch: usize,
    calls: &Cell<usize>,
) -> Page {
    paginate(q, batch, |after| {
        calls.set(calls.get() + 1);
        let start = match &after {
            Some(c) => entries.iter().position(|(e, _)| e == c).unwrap() + 1,
            None => 0,
        };
        let out = entries[start..].iter().take(batch).cloned().collect();
        std::future::ready(Ok(out))
    })
    .await
    .unwrap()
}

fn names(p: &Page) -> Vec<String> {
    p.tokens.iter().map(|t| t.name.clone()).collect()
}

#[tokio::test]
async fn pages_follow_each_other_without_repeating_or_skipping_a_token() {
    let entries = index(25, |_| Some("workspace_viewer"));
    let calls = Cell::new(0);
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let p = page(&entries, &query(10, cursor, None), 4, &calls).await;
        assert!(p.tokens.len() <= 10);
        seen.extend(names(&p));
        match p.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let all: Vec<String> = (0..25).rev().map(|ms| format!("t{ms}")).collect();
    assert_eq!(seen, all, "newest first, each once");
}

#[tokio::test]
async fn a_full_page_carries_the_cursor_of_its_last_token() {
    let entries = index(30, |_| Some("workspace_viewer"));
    let p = page(&entries, &query(5, None, None), 8, &Cell::new(0)).await;
    assert_eq!(names(&p), ["t29", "t28", "t27", "t26", "t25"]);
    assert_eq!(p.next.unwrap().created_ms, 25);
}

#[tokio::test]
async fn the_end_of_the_index_gives_no_cursor() {
    let entries = index(6, |_| Some("workspace_viewer"));
    let p = page(&entries, &query(50, None, None), 4, &Cell::new(0)).await;
    assert_eq!(p.tokens.len(), 6);
    assert!(p.next.is_none());
}

#[tokio::test]
async fn the_filter_applies_while_scanning_and_holes_are_skipped() {
    // Every third entry is a hole (an index entry whose record is gone),
    // the rest workspace tokens of two roles; keep enabled workspace tokens.
    let entries = index(30, |ms| match ms % 3 {
        0 => None,
        1 => Some("workspace_admin"),
        _ => Some("workspace_viewer"),
    });
    let mut q = query(4, None, Some(TokenKind::Workspace));
    q.filter.state = Some(TokenState::Enabled);
    let p = page(&entries, &q, 7, &Cell::new(0)).await;
    assert_eq!(p.tokens.len(), 4);
    assert!(
        p.tokens
            .iter()
            .all(|t| t.created_at.as_millisecond() % 3 != 0)
    );

    let project_only = query(4, None, Some(TokenKind::Project));
    let p = page(&entries, &project_only, 7, &Cell::new(0)).await;
    assert!(p.tokens.is_empty(), "no project tokens in the index");
    assert!(p.next.is_none(), "the whole index was read");
}

#[tokio::test]
async fn a_rare_filter_stops_after_max_scan_entries_with_a_cursor() {
    let entries = index(MAX_SCAN as u64 + 500, |_| Some("workspace_viewer"));
    let calls = Cell::new(0);
    let rare = query(10, None, Some(TokenKind::Project));
    let p = page(&entries, &rare, 250, &calls).await;
    assert!(p.tokens.is_empty());
    let next = p.next.expect("a cursor to go on from");
    assert_eq!(
        next.created_ms,
        entries[MAX_SCAN - 1].0.created_ms,
        "stopped at the scan bound"
    );
    assert_eq!(calls.get(), MAX_SCAN / 250);
}
