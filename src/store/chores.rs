//! [`Chores`]: periodic work about the whole fleet's tokens — the scan
//! behind `hawzu_gate_tokens_expiring` — done by one gate of the fleet at
//! a time instead of by every gate.
//!
//! A gate holds a chore for a while, under a value of its own store's
//! (random, one per store opened: one per gate), and extends
//! the hold while it keeps at it; the other gates skip the chore and read
//! what the holder shared. A gate that stops (dies, or loses the store)
//! lets its hold lapse, and another takes the chore over. Redis: the hold
//! is `<prefix>chore:<name>` (set if absent or still the holder's, with a
//! lifetime, in one script), the result `<prefix>chore-result:<name>`
//! (`redis/chores.rs`). Embedded: one gate per file, which always holds
//! every chore and has no one to share with.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{Store, StoreError};

/// Periodic fleet-wide work, one gate at a time (tested in
/// `tests/token_governance.rs`: two gates on one Redis, then a hand-over).
pub trait Chores: Send + Sync + 'static {
    /// Whether this gate does `chore` now: it takes the chore for `hold`
    /// when no gate holds it, extends its hold to `hold` from now when it
    /// holds it already; `false` while another gate holds it.
    fn hold_chore(
        &self,
        chore: &str,
        hold: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives `chore` up at once if this gate holds it (its run failed, or
    /// the gate stops: another gate may take it at its next round rather
    /// than when the hold lapses).
    fn leave_chore(&self, chore: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Shares the result of a run of `chore` with the other gates, kept
    /// for `keep` (in place of the last one).
    fn share_chore_result(
        &self,
        chore: &str,
        result: &[u8],
        keep: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What the gate doing `chore` last shared, while it is kept.
    fn chore_result(
        &self,
        chore: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
}

impl Chores for Store {
    async fn hold_chore(&self, chore: &str, hold: Duration) -> Result<bool, StoreError> {
        match self {
            // One gate opens the file: it does every chore.
            Store::Embedded(_) => Ok(true),
            Store::Redis(s) => s.hold_chore(chore, hold).await,
        }
    }

    async fn leave_chore(&self, chore: &str) -> Result<(), StoreError> {
        match self {
            Store::Embedded(_) => Ok(()),
            Store::Redis(s) => s.leave_chore(chore).await,
        }
    }

    async fn share_chore_result(
        &self,
        chore: &str,
        result: &[u8],
        keep: Duration,
    ) -> Result<(), StoreError> {
        match self {
            // No other gate reads this file.
            Store::Embedded(_) => Ok(()),
            Store::Redis(s) => s.share_chore_result(chore, result, keep).await,
        }
    }

    async fn chore_result(&self, chore: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Embedded(_) => Ok(None),
            Store::Redis(s) => s.chore_result(chore).await,
        }
    }
}

/// Gives up every chore in `chores` that this gate holds (at its stop:
/// another gate takes them over at its next round, not once the holds
/// lapse). Best effort, all at once (a stop waits one `store.timeout` at
/// most): a failure leaves a hold to lapse.
pub async fn leave_chores<S: Chores>(store: &S, chores: &[&str]) {
    futures_util::future::join_all(chores.iter().map(|chore| store.leave_chore(chore))).await;
}

/// A chore held for one run of it, which may outlast the hold (a scan of
/// many millions of tokens): [`ChoreHold::keep`] extends the hold once a
/// quarter of it has passed, so a long run is not taken up by a second
/// gate meanwhile.
pub struct ChoreHold<'a, S> {
    store: &'a S,
    chore: &'a str,
    hold: Duration,
    /// When the hold was last taken or extended.
    since: Instant,
    /// When it was last tried (a failed try is not tried again at once).
    tried: Instant,
}

impl<S> std::fmt::Debug for ChoreHold<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChoreHold")
            .field("chore", &self.chore)
            .field("hold", &self.hold)
            .finish_non_exhaustive()
    }
}

impl<'a, S: Chores> ChoreHold<'a, S> {
    /// The chore for this run, taken or extended for `hold` (see
    /// [`Chores::hold_chore`]); `None` while another gate holds it.
    pub async fn take(
        store: &'a S,
        chore: &'a str,
        hold: Duration,
    ) -> Result<Option<Self>, StoreError> {
        // The hold runs from before the call: Redis may have set it at
        // any point of it.
        let asked = Instant::now();
        let held = store.hold_chore(chore, hold).await?;
        Ok(held.then_some(Self {
            store,
            chore,
            hold,
            since: asked,
            tried: asked,
        }))
    }

    /// Called between steps of the run: `false` when another gate holds
    /// the chore now (this hold lapsed): the run should stop. A failed try
    /// is an error only once the hold may have lapsed (three quarters of
    /// it gone since it was last extended); before, the run goes on and
    /// the next step tries again.
    pub async fn keep(&mut self) -> Result<bool, StoreError> {
        if self.tried.elapsed() < self.hold / 4 {
            return Ok(true);
        }
        let asked = Instant::now();
        self.tried = asked;
        match self.store.hold_chore(self.chore, self.hold).await {
            Ok(held) => {
                self.since = asked;
                Ok(held)
            }
            Err(_) if self.since.elapsed() < self.hold / 4 * 3 => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Gives the chore up (the run failed): another gate may try at once.
    /// A failure to do so only leaves the hold to lapse.
    pub async fn leave(self) {
        let _ = self.store.leave_chore(self.chore).await;
    }
}
