//! Unit tests of `usage::counts` and the recorder's `count`: what the
//! request path hands over (once per flush per record, clients only when
//! new), what the writer's batch makes of it, and that a failing store
//! keeps the batch for the next flush.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::cache::CachedRecord;
use crate::store::EmbeddedStore;
use crate::store::redis::RedisOptions;
use crate::store::usage::hour_of;
use crate::store::{RedisStore, Store};
use crate::token::{Scope, TokenRecord};
use crate::usage::UsageRecorder;

fn record() -> TokenRecord {
    TokenRecord::sample(
        Scope::Workspace {
            role: "workspace_viewer".into(),
        },
        Timestamp::now(),
    )
}

fn recorder(capacity: usize) -> (UsageRecorder, mpsc::Receiver<Note>) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        UsageRecorder {
            tx: None,
            notes: Some(tx),
        },
        rx,
    )
}

fn drain(rx: &mut mpsc::Receiver<Note>) -> Vec<Note> {
    let mut out = Vec::new();
    while let Ok(n) = rx.try_recv() {
        out.push(n);
    }
    out
}

const HOME: fn() -> IpAddr = || IpAddr::from([192, 0, 2, 1]);

#[test]
fn a_record_is_handed_over_once_per_flush_and_a_client_once_while_the_same() {
    let (usage, mut rx) = recorder(64);
    let cached = Arc::new(CachedRecord::new(&record()));
    let now = Timestamp::now();
    for _ in 0..100 {
        usage.count(&cached, None, now, HOME, Some(b"ci/1"));
    }
    usage.count(
        &cached,
        Some(DenyCode::TokenDisabled),
        now,
        HOME,
        Some(b"ci/1"),
    );
    let notes = drain(&mut rx);
    assert_eq!(notes.len(), 2, "one record, one client: {notes:?}");
    assert!(matches!(notes[0], Note::Counted(_)));
    assert!(matches!(&notes[1], Note::Client { agent: Some(a), .. } if &a[..] == b"ci/1"));

    let mut tallies = Tallies::default();
    for n in notes {
        tallies.note(n);
    }
    let batch = tallies.take(7);
    assert_eq!(batch.len(), 1);
    let d = &batch[0];
    assert_eq!((d.hour, d.counts.allowed, d.counts.refused), (7, 100, 1));
    assert_eq!(d.last_refusal.as_ref().unwrap().code, "token_disabled");
    assert_eq!(d.clients[0].address, "192.0.2.1");
    assert_eq!(d.clients[0].user_agent, "ci/1");
    assert!(tallies.take(8).is_empty(), "drained whole");

    // After the drain the next count hands the record over again.
    usage.count(&cached, None, now, HOME, Some(b"ci/1"));
    assert_eq!(drain(&mut rx).len(), 1);
}

#[test]
fn another_client_is_noted_a_gap_later() {
    let (usage, mut rx) = recorder(64);
    let cached = Arc::new(CachedRecord::new(&record()));
    let t0 = Timestamp::now();
    let later = |ms| t0 + jiff::SignedDuration::from_millis(ms);
    usage.count(&cached, None, t0, HOME, None);
    usage.count(
        &cached,
        None,
        later(10),
        || IpAddr::from([198, 51, 100, 1]),
        None,
    );
    usage.count(
        &cached,
        None,
        later(1_500),
        || IpAddr::from([198, 51, 100, 1]),
        None,
    );
    let clients: Vec<String> = drain(&mut rx)
        .into_iter()
        .filter_map(|n| match n {
            Note::Client { address, .. } => Some(address.to_string()),
            Note::Counted(_) => None,
        })
        .collect();
    assert_eq!(clients, ["192.0.2.1", "198.51.100.1"]);
}

#[test]
fn a_full_queue_loses_no_count() {
    let (usage, mut rx) = recorder(1);
    let (a, b) = (
        Arc::new(CachedRecord::new(&record())),
        Arc::new(CachedRecord::new(&record())),
    );
    let now = Timestamp::now();
    usage.count(&a, None, now, HOME, None); // takes the one slot
    usage.count(&b, None, now, HOME, None); // full: b keeps its count
    let mut tallies = Tallies::default();
    for n in drain(&mut rx) {
        tallies.note(n);
    }
    usage.count(&b, None, now, HOME, None); // hands b over now
    for n in drain(&mut rx) {
        tallies.note(n);
    }
    let mut batch = tallies.take(1);
    batch.sort_by_key(|d| d.counts.allowed);
    assert_eq!(
        batch.iter().map(|d| d.counts.allowed).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn user_agents_are_cut_cleaned_and_redacted() {
    assert_eq!(clean_agent(None), "");
    assert_eq!(clean_agent(Some(b"curl/8\x07x")), "curl/8?x");
    // Bidirectional controls and line separators are shown as `?` too.
    assert_eq!(
        clean_agent(Some("bot\u{202E}gpj.exe\u{2028}x".as_bytes())),
        "bot?gpj.exe?x"
    );
    let long = vec![b'a'; 1000];
    assert_eq!(clean_agent(Some(&long)).len(), MAX_USER_AGENT);
    let secret = crate::token::TokenSecret::generate().unwrap();
    let agent = format!("bot {}", secret.expose());
    assert!(!clean_agent(Some(agent.as_bytes())).contains(secret.expose()));
}

#[test]
fn fingerprints_differ_by_address_and_agent() {
    let a = IpAddr::from([10, 0, 0, 1]);
    let b = IpAddr::from([10, 0, 0, 2]);
    assert_eq!(fingerprint(a, Some(b"x")), fingerprint(a, Some(b"x")));
    assert_ne!(fingerprint(a, Some(b"x")), fingerprint(b, Some(b"x")));
    assert_ne!(
        fingerprint(a, Some(b"curl/8.5.0")),
        fingerprint(a, Some(b"curl/8.6.0"))
    );
    assert_ne!(fingerprint(a, None), fingerprint(a, Some(b"")));
}

#[tokio::test]
async fn a_failing_store_keeps_the_batch_for_the_next_flush() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Store::Redis(
        RedisStore::new(RedisOptions {
            url: format!("redis://127.0.0.1:{port}"),
            key_prefix: "x:".into(),
            timeout: Duration::from_millis(100),
            retention: Duration::from_secs(3600),
        })
        .unwrap(),
    );
    let (usage, mut rx) = recorder(8);
    let rec = record();
    let cached = Arc::new(CachedRecord::new(&rec));
    let hour = hour_of(Timestamp::now());
    usage.count(&cached, None, Timestamp::now(), HOME, None);
    let mut tallies = Tallies::default();
    for n in drain(&mut rx) {
        tallies.note(n);
    }
    tallies.flush(&down, hour, Duration::from_secs(3600)).await;

    let dir = tempfile::tempdir().unwrap();
    let up = Store::Embedded(
        EmbeddedStore::open(dir.path(), Duration::from_secs(5))
            .await
            .unwrap(),
    );
    tallies.flush(&up, hour, Duration::from_secs(3600)).await;
    let report = up.usage(&rec.id, hour, hour).await.unwrap();
    assert_eq!(report.hours[0].1.allowed, 1, "written by the next flush");
}
