//! A cached token's usage since the last flush: requests allowed and
//! refused, the last refusal, and which client was last noted. Atomics
//! only: the request path counts with one atomic add and two loads, takes
//! no lock and allocates nothing; the usage writer drains it.
//!
//! Knows nothing of deny codes or clients beyond opaque numbers (`usage`
//! gives them meaning).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// One refused request adds this to [`Tally::counts`]; an allowed one, 1.
const REFUSED_ONE: u64 = 1 << 32;
const LOW: u64 = (1 << 32) - 1;

/// What a flush takes from a [`Tally`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    pub allowed: u64,
    pub refused: u64,
    /// The last refusal since the previous drain: (ms since the epoch, code).
    pub refusal: Option<(i64, u8)>,
}

/// Per-record usage counters (see the module header).
#[derive(Debug, Default)]
pub struct Tally {
    /// Allowed in the low 32 bits, refused in the high 32 (a flush every
    /// few seconds never lets either reach 2^32).
    counts: AtomicU64,
    /// Handed to the writer since its last drain: the next request need
    /// not hand it over again.
    queued: AtomicBool,
    /// The last refusal: ms since the epoch << 8 | code; 0 for none.
    refusal: AtomicU64,
    /// Fingerprint of the client last noted, and when (ms).
    client: AtomicU64,
    client_ms: AtomicI64,
}

impl Tally {
    /// Counts an allowed request. True when the record must be handed to
    /// the writer (the first count since its last drain).
    pub fn allowed(&self) -> bool {
        // AcqRel: pairs with the drain's swap, so a count the drain missed
        // sees the drain's cleared `queued` and hands the record over again.
        self.counts.fetch_add(1, Ordering::AcqRel);
        self.claim()
    }

    /// Counts a refused request with `code` at `now_ms`; true as for
    /// [`Tally::allowed`].
    pub fn refused(&self, code: u8, now_ms: i64) -> bool {
        let packed = (u64::try_from(now_ms).unwrap_or(0) << 8) | u64::from(code);
        // Before the count: a drain that takes the count also sees this.
        self.refusal.store(packed, Ordering::Relaxed);
        self.counts.fetch_add(REFUSED_ONE, Ordering::AcqRel);
        self.claim()
    }

    fn claim(&self) -> bool {
        !self.queued.load(Ordering::Acquire) && !self.queued.swap(true, Ordering::AcqRel)
    }

    /// The writer could not take the record (its queue was full): the next
    /// count hands it over again; nothing counted is lost.
    pub fn unclaim(&self) {
        self.queued.store(false, Ordering::Release);
    }

    /// Takes everything counted so far (the writer, at a flush).
    pub fn drain(&self) -> Drained {
        self.queued.store(false, Ordering::Release);
        let counts = self.counts.swap(0, Ordering::AcqRel);
        let refusal = self.refusal.swap(0, Ordering::AcqRel);
        Drained {
            allowed: counts & LOW,
            refused: counts >> 32,
            refusal: (refusal != 0).then(|| {
                (
                    i64::try_from(refusal >> 8).unwrap_or(0),
                    (refusal & 0xff) as u8,
                )
            }),
        }
    }

    /// Whether the client with `fingerprint` should be noted at `now_ms`:
    /// not when it is the client last noted, within `same_every` ms; nor
    /// within `gap` ms of any note (a token used from many clients at once
    /// is noted at most once per `gap`). One caller wins per note.
    pub fn client_due(&self, fingerprint: u64, now_ms: i64, same_every: i64, gap: i64) -> bool {
        let at = self.client_ms.load(Ordering::Relaxed);
        if now_ms - at < gap
            || (self.client.load(Ordering::Relaxed) == fingerprint && now_ms - at < same_every)
        {
            return false;
        }
        if self
            .client_ms
            .compare_exchange(at, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.client.store(fingerprint, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_handed_over_once_per_drain_and_drained_whole() {
        let t = Tally::default();
        assert!(t.allowed(), "the first count hands the record over");
        assert!(!t.allowed());
        assert!(!t.refused(4, 1_000));
        assert!(!t.refused(6, 2_000));
        assert_eq!(
            t.drain(),
            Drained {
                allowed: 2,
                refused: 2,
                refusal: Some((2_000, 6))
            }
        );
        assert_eq!(t.drain(), Drained::default());
        assert!(t.refused(3, 3_000), "after a drain: handed over again");
    }

    #[test]
    fn a_tally_adds_at_most_forty_bytes_to_a_cached_token() {
        assert!(std::mem::size_of::<Tally>() <= 40);
    }

    #[test]
    fn an_unclaimed_record_is_handed_over_by_the_next_count() {
        let t = Tally::default();
        assert!(t.allowed());
        t.unclaim();
        assert!(t.allowed());
        assert_eq!(t.drain().allowed, 2, "nothing counted was lost");
    }

    #[test]
    fn a_client_is_noted_again_after_a_while_or_when_another_comes() {
        let t = Tally::default();
        let (same, gap) = (60_000, 1_000);
        assert!(t.client_due(7, 100_000, same, gap));
        assert!(!t.client_due(7, 100_500, same, gap));
        assert!(!t.client_due(8, 100_500, same, gap), "within the gap");
        assert!(!t.client_due(7, 150_000, same, gap), "the same client");
        assert!(t.client_due(8, 101_000, same, gap), "another client");
        assert!(t.client_due(7, 102_000, same, gap));
        assert!(t.client_due(7, 162_000, same, gap), "the same, a minute on");
    }
}
