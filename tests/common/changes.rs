//! The truth a load is judged by: tracked tokens with a log of their
//! changes (`Tracked`, `Change`, `Truth`) and the `Changer` that makes the
//! changes through the admin API. Never judges an answer itself (`load`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use super::Http;

/// What the right answer about a token is at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    Valid,
    Invalid,
    /// A change is under way (sent, not yet answered, or answered less than
    /// its bound ago): either answer is right.
    InDoubt,
}

/// One change of a token's state through the admin API.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    /// Valid after it (enable) or not (disable, revoke).
    pub valid_after: bool,
    /// Just before the first try was sent.
    pub sent: Instant,
    /// When the try that succeeded answered (`None`: not yet).
    pub acked: Option<Instant>,
    /// How long after `acked` a gate may still answer the old way.
    pub bound: Duration,
}

/// A token whose state the test changes while the load asks about it,
/// with the log of its changes: the judge of every answer about it.
#[derive(Debug)]
pub struct Tracked {
    pub secret: String,
    pub id: String,
    log: std::sync::Mutex<Vec<Change>>,
    revoked: std::sync::atomic::AtomicBool,
}

impl Tracked {
    pub fn new(secret: String, id: String) -> Self {
        Self {
            secret,
            id,
            log: std::sync::Mutex::new(Vec::new()),
            revoked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Adds a change made outside a [`Changer`] to the log.
    pub fn record(&self, change: Change) {
        self.log.lock().unwrap().push(change);
    }

    /// The token's true state at `t`.
    pub fn truth_at(&self, t: Instant) -> Truth {
        let log = self.log.lock().unwrap();
        let mut valid = true;
        for c in log.iter() {
            if t < c.sent {
                break;
            }
            match c.acked {
                Some(k) if t >= k + c.bound => valid = c.valid_after,
                _ if c.valid_after == valid => {}
                _ => return Truth::InDoubt,
            }
        }
        if valid { Truth::Valid } else { Truth::Invalid }
    }

    /// The last change answered before `t`: (valid after it, when, its
    /// bound).
    pub(super) fn settled_before(&self, t: Instant) -> Option<(bool, Instant, Duration)> {
        let log = self.log.lock().unwrap();
        log.iter().rev().find_map(|c| {
            c.acked
                .filter(|k| *k <= t)
                .map(|k| (c.valid_after, k, c.bound))
        })
    }

    /// How many changes the log holds.
    pub fn changes(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The state after the last change in the log.
    pub fn is_valid_now(&self) -> bool {
        self.log
            .lock()
            .unwrap()
            .last()
            .is_none_or(|c| c.valid_after)
    }
}

/// One change as the [`Changer`] logs it: when sent, and when answered 200
/// (`None`: not yet).
type Sent = (Instant, Option<Instant>);

/// Changes tracked tokens through a gate's admin API, one at a time, at a
/// steady pace: disable, enable, revoke. Every change goes into the
/// token's log before it is sent and gets its answer time when a try
/// succeeds; tries that fail (503 while Redis is away) are repeated until
/// one succeeds, and such a change gets the in-doubt bound (the failed try
/// may still have been written, without its event).
pub struct Changer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    bound_us: std::sync::Arc<AtomicU64>,
    /// Every change: when sent, and when answered 200 (`None`: not yet).
    sent: std::sync::Arc<std::sync::Mutex<Vec<Sent>>>,
    /// The latest `acked + bound` of any change so far.
    settled: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Changer {
    /// Changes under way at once (each lane has its own tokens), so that
    /// several are in flight during an outage.
    pub const LANES: usize = 4;

    /// `delivered`: the bound of a change made in one try while no fault is
    /// on; `in_doubt`: the bound of one that needed several tries.
    pub fn start(
        admin: Http,
        tracked: Vec<std::sync::Arc<Tracked>>,
        period: Duration,
        delivered: Duration,
        in_doubt: Duration,
    ) -> Self {
        use std::sync::Arc;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bound_us = Arc::new(AtomicU64::new(delivered.as_micros() as u64));
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let settled = Arc::new(std::sync::Mutex::new(None));
        let tasks: Vec<_> = (0..Self::LANES)
            .map(|lane| {
                let (stop, bound_us, sent, settled, admin) = (
                    stop.clone(),
                    bound_us.clone(),
                    sent.clone(),
                    settled.clone(),
                    admin.clone(),
                );
                let tracked: Vec<Arc<Tracked>> = tracked
                    .iter()
                    .skip(lane)
                    .step_by(Self::LANES)
                    .cloned()
                    .collect();
                tokio::spawn(async move {
                    let mut n: usize = lane;
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(period).await;
                        n += 1;
                        // Round-robin over the tokens not revoked yet.
                        let live: Vec<&Arc<Tracked>> = tracked
                            .iter()
                            .filter(|t| !t.revoked.load(Ordering::Relaxed))
                            .collect();
                        if live.is_empty() {
                            continue;
                        }
                        let t = live[n.wrapping_mul(7) % live.len()];
                        // Every 5th change a revoke, else flip.
                        let revoke = n.is_multiple_of(5) && live.len() > tracked.len() / 3;
                        let valid_now = t.is_valid_now();
                        let (method, path, valid_after) = if revoke {
                            (Method::DELETE, format!("/admin/v1/tokens/{}", t.id), false)
                        } else if valid_now {
                            (
                                Method::POST,
                                format!("/admin/v1/tokens/{}/disable", t.id),
                                false,
                            )
                        } else {
                            (
                                Method::POST,
                                format!("/admin/v1/tokens/{}/enable", t.id),
                                true,
                            )
                        };
                        let bound_at =
                            |b: &AtomicU64| Duration::from_micros(b.load(Ordering::Relaxed));
                        let started = Instant::now();
                        let index = {
                            let mut log = t.log.lock().unwrap();
                            log.push(Change {
                                valid_after,
                                sent: started,
                                acked: None,
                                bound: bound_at(&bound_us),
                            });
                            log.len() - 1
                        };
                        let slot = {
                            let mut sent = sent.lock().unwrap();
                            sent.push((started, None));
                            sent.len() - 1
                        };
                        let mut tries = 0;
                        loop {
                            tries += 1;
                            let r = admin.send(method.clone(), &path, &[], None).await;
                            if r.status == StatusCode::OK {
                                break;
                            }
                            assert_eq!(
                                r.status,
                                StatusCode::SERVICE_UNAVAILABLE,
                                "{method} {path}: {:?}",
                                r.body
                            );
                            assert!(
                                started.elapsed() < Duration::from_secs(60),
                                "a change not written within 60 s"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let acked = Instant::now();
                        sent.lock().unwrap()[slot].1 = Some(acked);
                        let mut log = t.log.lock().unwrap();
                        let c = &mut log[index];
                        c.acked = Some(acked);
                        c.bound = c.bound.max(bound_at(&bound_us));
                        if tries > 1 {
                            c.bound = c.bound.max(in_doubt);
                        }
                        let by = acked + c.bound;
                        let mut latest = settled.lock().unwrap();
                        *latest = Some(latest.map_or(by, |l: Instant| l.max(by)));
                        if revoke {
                            t.revoked.store(true, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            bound_us,
            sent,
            settled,
            tasks,
        }
    }

    /// When every change answered so far is past its bound (from then on a
    /// gate answering the old way about it is wrong).
    pub fn settled_by(&self) -> Instant {
        self.settled.lock().unwrap().unwrap_or_else(Instant::now)
    }

    /// The bound of changes sent or answered from now on.
    pub fn set_bound(&self, bound: Duration) {
        self.bound_us
            .store(bound.as_micros() as u64, Ordering::Relaxed);
    }

    /// How many changes were under way in `[from, to]`: sent by `to` and
    /// not answered before `from` (sent during a fault, or sent before it
    /// and retried through it).
    pub fn under_way_between(&self, from: Instant, to: Instant) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(sent, acked)| *sent <= to && acked.is_none_or(|a| a >= from))
            .count()
    }

    pub async fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            t.await.expect("the changer panicked");
        }
        self.sent.lock().unwrap().len()
    }
}
