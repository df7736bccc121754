//! The events channel: publishing a change (sharded on a cluster) and
//! following the channel as a [`ChangeFeed`] — subscribe, prove with a
//! probe that messages arrive, resubscribe after a disconnect or a moved
//! master, and say [`Change::Resumed`] only once the store answers reads.
//!
//! Every one of those steps was paid for by a chaos test
//! (docs/reliability.md); keep their comments with them. It passes
//! changes on and never acts on them: what a follower drops is its own
//! business.

use std::time::{Duration, Instant};

use redis::{PushKind, Value};
use tokio::sync::mpsc;

use super::connect::Conn;
use super::keys::{event_hash, probe_payload};
use super::subscriber::Subscriber;
use super::{RedisStore, redis_err};
use crate::store::{Change, ChangeFeed, Changes, StoreError, TokenStore};
use crate::token::TokenHash;

/// Tries of a cluster invalidation that no subscriber received, and the
/// pause between them (kept well inside `store.timeout`).
const PUBLISH_ATTEMPTS: u32 = 3;
const PUBLISH_RETRY_PAUSE: Duration = Duration::from_millis(20);

impl RedisStore {
    /// Publishes the invalidation of `hash` (sharded on a cluster).
    pub(super) async fn publish_on(
        &self,
        conn: &mut Conn,
        hash: &TokenHash,
    ) -> Result<(), StoreError> {
        let channel = self.events_channel();
        let event = Self::event(hash);
        let Conn::Cluster(c) = conn else {
            let _: Value = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&event)
                .query_async(conn)
                .await
                .map_err(redis_err)?;
            return Ok(());
        };
        // SPUBLISH answers how many subscribers of that node got the event.
        // Every ready gate subscribes, this one included, so none means it
        // went to a node nobody listens on — a slot map not yet caught up
        // with a fail-over: refresh and send again, briefly.
        for attempt in 0..PUBLISH_ATTEMPTS {
            // A keyed read in the channel's slot first: right after a
            // fail-over the slot map may still name the old master, now a
            // replica, which takes an SPUBLISH for its own subscribers
            // only; the read gets MOVED and refreshes the map.
            let _: Value = redis::cmd("EXISTS")
                .arg(&channel)
                .query_async(c)
                .await
                .map_err(redis_err)?;
            let receivers: i64 = redis::cmd("SPUBLISH")
                .arg(&channel)
                .arg(&event)
                .query_async(c)
                .await
                .map_err(redis_err)?;
            if receivers > 0 {
                return Ok(());
            }
            if attempt + 1 < PUBLISH_ATTEMPTS {
                tokio::time::sleep(PUBLISH_RETRY_PAUSE).await;
            }
        }
        tracing::warn!(
            "an invalidation reached no subscriber (a cluster fail-over in progress, or no gate subscribed yet); other gates enforce the change within cache.ttl"
        );
        Ok(())
    }
}

/// Every gate follows the events channel of its store (plain pub/sub;
/// sharded on a cluster).
impl ChangeFeed for RedisStore {
    async fn publish(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.timed(|mut conn| async move { self.publish_on(&mut conn, hash).await })
            .await
    }

    fn changes(&self) -> Result<Changes, StoreError> {
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let subscriber = self.subscriber(push_tx)?;
        let channel = subscriber.channel().to_owned();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(follow(self.clone(), subscriber, push_rx, tx));
        Ok(Changes::from_task(channel, rx, task))
    }
}

// === the follower ===

/// Follows the events channel of `store` and passes on what it hears, until
/// the receiver of `tx` is dropped. Subscribes again after a disconnect
/// (or, with Sentinel, when the master moved) and then says
/// [`Change::Resumed`], since messages may have been missed meanwhile.
/// While Redis is away it says [`Change::Interrupted`] and nothing more:
/// a follower keeps what it holds (cached tokens keep working for their
/// lifetime).
async fn follow(
    store: RedisStore,
    mut subscriber: Subscriber,
    mut rx: mpsc::UnboundedReceiver<redis::PushInfo>,
    tx: mpsc::UnboundedSender<Change>,
) {
    let timeout = store.inner.timeout;
    let send = |change| tx.send(change).is_ok();
    // Whether a subscription was ever confirmed (nothing can be missed before).
    let mut ever = false;
    let mut up = false;
    let mut backoff = RESUBSCRIBE_FIRST;
    // A probe this gate published and has not yet received back.
    let mut pending: Option<(String, Instant)> = None;
    // Failed attempts are logged once, then at a backed-off interval.
    let mut outage = Outage::default();
    // When the wait for a readable store began: kept across subscriptions
    // lost during it, so the cache is dropped at most
    // `STORE_WAIT_BEFORE_DROP` after the first one.
    let mut waiting_since: Option<Instant> = None;
    let mut check = tokio::time::interval(PROBE_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !up {
            // What was queued before this attempt is news of the
            // subscription being replaced (a slot that moved unsubscribes
            // both channels, one push each: the second would fail the
            // attempt for nothing). Its invalidations are passed on.
            while let Ok(push) = rx.try_recv() {
                if matches!(push.kind, PushKind::Message | PushKind::SMessage)
                    && let Some(hash) = push.data.get(1).and_then(payload_hash)
                    && !send(Change::Token(hash))
                {
                    return;
                }
            }
            let attempt = async {
                subscriber.subscribe().await?;
                // Proof that messages arrive: a probe published now must
                // come back (after a cluster fail-over the subscription can
                // land on a replica that never sees the channel's messages).
                let probe = probe_payload();
                subscriber.probe(&probe).await?;
                loop {
                    let Some(push) = rx.recv().await else {
                        return Err(StoreError::Unavailable("listener closed".into()));
                    };
                    match push.kind {
                        PushKind::Message | PushKind::SMessage => {
                            if push.data.get(1).is_some_and(|p| is_payload(p, &probe)) {
                                return Ok(());
                            }
                            if let Some(hash) = push.data.get(1).and_then(payload_hash)
                                && !send(Change::Token(hash))
                            {
                                return Err(StoreError::Unavailable("follower gone".into()));
                            }
                        }
                        PushKind::Disconnection
                        | PushKind::Unsubscribe
                        | PushKind::SUnsubscribe => {
                            return Err(StoreError::Unavailable(
                                "subscription lost while checked".into(),
                            ));
                        }
                        _ => {}
                    }
                }
            };
            match tokio::time::timeout(timeout * 4, attempt).await {
                Ok(Ok(())) => {
                    let change = if ever {
                        // Back after a disconnect: messages may have been
                        // missed meanwhile, so nothing cached is trusted.
                        // But the store must answer reads first: a Redis
                        // that restarts takes SUBSCRIBE while it is still
                        // loading its data and refuses reads (LOADING)
                        // until done, and distrusting the cache then would
                        // make every cached token wait out a failed read
                        // (`store.timeout`) for the whole load. Entries keep serving meanwhile (a loading
                        // Redis takes no writes either; the wait is bounded,
                        // and so is every entry, by cache.ttl), and the
                        // changes heard meanwhile are passed on at once: on
                        // a Cluster with one shard down the others take
                        // writes, and a token revoked there must not wait.
                        let since = *waiting_since.get_or_insert_with(Instant::now);
                        match wait_for_reads(&store, &mut rx, &send, since).await {
                            Waited::Reads | Waited::GaveUp => {
                                waiting_since = None;
                                Some(Change::Resumed)
                            }
                            Waited::Lost => {
                                // Counted as a failed attempt: backed off,
                                // and logged at a growing interval.
                                if let Some(failures) = outage.failed() {
                                    tracing::warn!(
                                        failures,
                                        "invalidation listener: subscription lost while waiting for the store to answer reads; resubscribing"
                                    );
                                }
                                subscriber.reset();
                                None
                            }
                            Waited::Gone => return,
                        }
                    } else {
                        Some(Change::Started)
                    };
                    if let Some(change) = change {
                        backoff = RESUBSCRIBE_FIRST;
                        outage.over();
                        up = true;
                        ever = true;
                        // A probe of the lost subscription is not waited for.
                        pending = None;
                        if !send(change) {
                            return;
                        }
                    }
                }
                Ok(Err(e)) => {
                    if tx.is_closed() {
                        return;
                    }
                    subscriber.reset();
                    if let Some(failures) = outage.failed() {
                        tracing::warn!(
                            error = %e,
                            failures,
                            "invalidation listener: cannot subscribe yet; retrying (logged again at a growing interval)"
                        );
                    }
                }
                Err(_) => {
                    subscriber.reset();
                    if let Some(failures) = outage.failed() {
                        tracing::warn!(
                            failures,
                            "invalidation listener: no answer, or the probe did not come back; retrying (logged again at a growing interval)"
                        );
                    }
                }
            }
        }
        let wait = if up { Duration::MAX } else { backoff };
        tokio::select! {
            // Messages first: a probe's echo that is already here when the
            // check ticks must count, or a busy machine (both ready at once,
            // picked at random) would resubscribe and drop the whole cache
            // for nothing — and lose the events sent meanwhile.
            biased;
            push = rx.recv() => {
                let Some(push) = push else { return };
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        if let Some((probe, _)) = &pending
                            && push.data.get(1).is_some_and(|p| is_payload(p, probe))
                        {
                            pending = None;
                            continue;
                        }
                        if let Some(hash) = push.data.get(1).and_then(payload_hash)
                            && !send(Change::Token(hash))
                        {
                            return;
                        }
                    }
                    PushKind::Disconnection => {
                        if up {
                            tracing::warn!("invalidation listener disconnected; resubscribing");
                            if !send(Change::Interrupted) {
                                return;
                            }
                        }
                        up = false;
                    }
                    // This listener never unsubscribes: the server dropped
                    // the subscription (a cluster node that lost the
                    // channel's slot in a fail-over does so).
                    PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                        tracing::warn!("invalidation listener unsubscribed by Redis; resubscribing");
                        if up && !send(Change::Interrupted) {
                            return;
                        }
                        up = false;
                    }
                    _ => {}
                }
            }
            _ = check.tick(), if up => {
                let lost = if !subscriber.check().await {
                    true
                } else if let Some((_, sent)) = &pending {
                    // Redis took the probe but it did not come back: the
                    // subscription is somewhere that does not see the
                    // channel (a cluster fail-over can leave it on the old
                    // master) or the connection is dead without a word.
                    if sent.elapsed() >= PROBE_EVERY {
                        tracing::warn!("invalidation listener: probe not received back; resubscribing");
                        subscriber.reset();
                        true
                    } else {
                        false
                    }
                } else {
                    let probe = probe_payload();
                    // Only a probe Redis accepted counts: while Redis is
                    // paused nothing is lost, and the cache is kept.
                    if let Ok(Ok(())) = tokio::time::timeout(timeout, subscriber.probe(&probe)).await {
                        pending = Some((probe, Instant::now()));
                    }
                    false
                };
                if lost {
                    up = false;
                    pending = None;
                    if !send(Change::Interrupted) {
                        return;
                    }
                }
            }
            () = tokio::time::sleep(wait), if !up => {
                backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
            }
        }
    }
}

/// How [`wait_for_reads`] ended.
enum Waited {
    /// The store answers reads.
    Reads,
    /// It did not within [`STORE_WAIT_BEFORE_DROP`].
    GaveUp,
    /// The subscription was lost meanwhile: nothing is resumed.
    Lost,
    /// The follower is gone.
    Gone,
}

/// Waits until `store` answers reads or [`STORE_WAIT_BEFORE_DROP`] has
/// passed since `since`, passing on every invalidation heard meanwhile. A
/// push waits at most one read check (bounded by `store.timeout`).
async fn wait_for_reads(
    store: &RedisStore,
    rx: &mut mpsc::UnboundedReceiver<redis::PushInfo>,
    send: &impl Fn(Change) -> bool,
    since: Instant,
) -> Waited {
    loop {
        if store.ping().await.is_ok() {
            return Waited::Reads;
        }
        if since.elapsed() >= STORE_WAIT_BEFORE_DROP {
            return Waited::GaveUp;
        }
        let pause = tokio::time::sleep(RESUBSCRIBE_FIRST);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                biased;
                push = rx.recv() => {
                    let Some(push) = push else { return Waited::Gone };
                    match push.kind {
                        PushKind::Message | PushKind::SMessage => {
                            if let Some(hash) = push.data.get(1).and_then(payload_hash)
                                && !send(Change::Token(hash))
                            {
                                return Waited::Gone;
                            }
                        }
                        PushKind::Disconnection
                        | PushKind::Unsubscribe
                        | PushKind::SUnsubscribe => return Waited::Lost,
                        _ => {}
                    }
                }
                () = &mut pause => break,
            }
        }
    }
}

/// How often the listener publishes a probe on the channel and checks the
/// previous one came back (and, with Sentinel, that the master has not
/// moved). A subscription lost without a word is found within two of these.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// When a Redis that stays away is logged: the first failed attempt, then
/// again after 10 s, 20 s, 40 s … up to every 5 minutes (attempts go on
/// every 50–500 ms meanwhile), with how many attempts failed; once more
/// when it is back.
#[derive(Debug, Default)]
struct Outage {
    /// When the outage began and when it was last logged, if one is on.
    since: Option<(Instant, Instant)>,
    failures: u64,
    next_log: Duration,
}

impl Outage {
    const FIRST_REPEAT: Duration = Duration::from_secs(10);
    const MAX_REPEAT: Duration = Duration::from_secs(300);

    /// Counts a failed attempt; `Some(failures so far)` when it is to be
    /// logged.
    fn failed(&mut self) -> Option<u64> {
        self.failures += 1;
        let now = Instant::now();
        match &mut self.since {
            None => {
                self.since = Some((now, now));
                self.next_log = Self::FIRST_REPEAT;
                Some(self.failures)
            }
            Some((_, logged)) if logged.elapsed() >= self.next_log => {
                *logged = now;
                self.next_log = (self.next_log * 2).min(Self::MAX_REPEAT);
                Some(self.failures)
            }
            Some(_) => None,
        }
    }

    /// The store answered again: logs how long it was away, if it was.
    fn over(&mut self) {
        if let Some((began, _)) = self.since.take() {
            tracing::info!(
                failures = self.failures,
                down_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
                "invalidation listener: Redis answers again"
            );
        }
        self.failures = 0;
    }
}

/// After a resubscription, how long the listener waits for the store to
/// answer reads (a restarted Redis loading its data) before it drops the
/// cache anyway.
const STORE_WAIT_BEFORE_DROP: Duration = Duration::from_secs(30);

/// First pause between subscription attempts, and the longest: recovery
/// after Redis returns takes at most about this long.
const RESUBSCRIBE_FIRST: Duration = Duration::from_millis(50);
const RESUBSCRIBE_MAX: Duration = Duration::from_millis(500);

/// The bytes of a message's payload.
fn payload(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b.as_slice()),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn is_payload(value: &Value, expected: &str) -> bool {
    payload(value) == Some(expected.as_bytes())
}

/// The hash a message's payload invalidates, if it is an invalidation.
fn payload_hash(value: &Value) -> Option<TokenHash> {
    event_hash(payload(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_once_then_at_a_growing_interval_and_when_over() {
        let mut o = Outage::default();
        assert_eq!(o.failed(), Some(1), "the first failure is logged");
        for _ in 0..100 {
            assert_eq!(o.failed(), None, "the next ones, within 10 s, are not");
        }
        // 10 s later (moved back instead of waited for).
        if let Some((_, logged)) = &mut o.since {
            *logged -= Duration::from_secs(10);
        }
        assert_eq!(o.failed(), Some(102), "logged again, with the count");
        assert_eq!(o.next_log, Duration::from_secs(20), "then after 20 s");
        o.over();
        assert!(o.since.is_none());
        assert_eq!(o.failed(), Some(1), "a new outage is logged at once");
    }
}
