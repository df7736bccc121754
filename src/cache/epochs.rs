//! The epoch check's counters: which invalidations a store read raced with.
//!
//! A load notes the counters of its hash before it reads and looks again
//! after it inserted: if they moved, an invalidation landed while the read
//! was out, found nothing to remove, and the entry just inserted may
//! predate the change, so it goes. Counters are per stripe of hashes, not
//! one for the cache: a fleet hears changes all the time, and one counter
//! would make every change drop whatever any concurrent miss just read (a
//! token read again on its next request, and refused with 503 should the
//! store be away by then). Two hashes share a stripe once in
//! [`STRIPES`]; a shared stripe costs only that extra read.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::token::TokenHash;

/// Stripes of hashes with a counter each (8 KiB in all, and as much for
/// the instants of their last changes).
const STRIPES: usize = 1024;

pub(super) struct Epochs {
    /// Bumped before each invalidation of a hash in the stripe.
    stripes: Box<[AtomicU64]>,
    /// Per stripe: reads that began before this instant (ms on the cache's
    /// clock, plus one; 0: none) began before a change of the stripe. A
    /// request that joins a read already under way takes its answer; this
    /// tells it whether that read may predate a change it came after.
    changed_before_ms: Box<[AtomicU64]>,
    /// Bumped before the whole cache is distrusted.
    drops: AtomicU64,
}

/// What a load saw before it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    stripe: u64,
    drops: u64,
}

impl Epochs {
    pub(super) fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            changed_before_ms: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            drops: AtomicU64::new(0),
        }
    }

    fn index(hash: &TokenHash) -> usize {
        // The hash is BLAKE3: any of its bytes are uniform.
        usize::from(u16::from_le_bytes([hash.0[0], hash.0[1]])) % STRIPES
    }

    fn stripe(&self, hash: &TokenHash) -> &AtomicU64 {
        &self.stripes[Self::index(hash)]
    }

    /// Whether a read of `hash` that began at `began_ms` may predate a
    /// change of its stripe (one begun in the change's millisecond counts
    /// as before).
    pub(super) fn began_before_a_change(&self, hash: &TokenHash, began_ms: u64) -> bool {
        began_ms < self.changed_before_ms[Self::index(hash)].load(Ordering::Acquire)
    }

    /// The counters a load of `hash` compares after it inserted.
    pub(super) fn seen(&self, hash: &TokenHash) -> Seen {
        Seen {
            stripe: self.stripe(hash).load(Ordering::Acquire),
            drops: self.drops.load(Ordering::Acquire),
        }
    }

    /// Before `hash` is invalidated, at `now_ms` on the cache's clock.
    pub(super) fn changed(&self, hash: &TokenHash, now_ms: u64) {
        self.changed_before_ms[Self::index(hash)]
            .fetch_max(now_ms.saturating_add(1), Ordering::AcqRel);
        self.stripe(hash).fetch_add(1, Ordering::AcqRel);
    }

    /// Whether `a` and `b` share a counter (tests pick hashes that do not).
    #[cfg(test)]
    pub(super) fn share_a_stripe(&self, a: &TokenHash, b: &TokenHash) -> bool {
        std::ptr::eq(self.stripe(a), self.stripe(b))
    }

    /// Before everything is dropped.
    pub(super) fn dropped(&self) {
        self.drops.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(first: u8, second: u8) -> TokenHash {
        let mut bytes = [7; 32];
        bytes[0] = first;
        bytes[1] = second;
        TokenHash(bytes)
    }

    #[test]
    fn a_change_moves_its_own_stripe_and_a_drop_moves_every_hash() {
        let epochs = Epochs::new();
        let (a, b) = (hash(1, 0), hash(2, 0));
        let (a0, b0) = (epochs.seen(&a), epochs.seen(&b));
        epochs.changed(&a, 10);
        assert_ne!(epochs.seen(&a), a0);
        assert_eq!(epochs.seen(&b), b0, "another stripe moved");
        let b1 = epochs.seen(&b);
        epochs.dropped();
        assert_ne!(epochs.seen(&b), b1);
        // Hashes a stripe apart share its counter.
        let (c, d) = (hash(3, 0), hash(3, 4));
        let d0 = epochs.seen(&d);
        epochs.changed(&c, 20);
        assert!(
            epochs.began_before_a_change(&d, 20),
            "a read begun in its millisecond"
        );
        assert!(!epochs.began_before_a_change(&d, 21));
        assert!(
            !epochs.began_before_a_change(&hash(9, 0), 0),
            "a stripe never changed"
        );
        assert_ne!(epochs.seen(&d), d0);
    }
}
