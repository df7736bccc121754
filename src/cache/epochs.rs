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

/// Stripes of hashes with a counter each (8 KiB in all).
const STRIPES: usize = 1024;

pub(super) struct Epochs {
    /// Bumped before each invalidation of a hash in the stripe.
    stripes: Box<[AtomicU64]>,
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
            drops: AtomicU64::new(0),
        }
    }

    fn stripe(&self, hash: &TokenHash) -> &AtomicU64 {
        // The hash is BLAKE3: any of its bytes are uniform.
        let i = usize::from(u16::from_le_bytes([hash.0[0], hash.0[1]])) % STRIPES;
        &self.stripes[i]
    }

    /// The counters a load of `hash` compares after it inserted.
    pub(super) fn seen(&self, hash: &TokenHash) -> Seen {
        Seen {
            stripe: self.stripe(hash).load(Ordering::Acquire),
            drops: self.drops.load(Ordering::Acquire),
        }
    }

    /// Before `hash` is invalidated.
    pub(super) fn changed(&self, hash: &TokenHash) {
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
        epochs.changed(&a);
        assert_ne!(epochs.seen(&a), a0);
        assert_eq!(epochs.seen(&b), b0, "another stripe moved");
        let b1 = epochs.seen(&b);
        epochs.dropped();
        assert_ne!(epochs.seen(&b), b1);
        // Hashes a stripe apart share its counter.
        let (c, d) = (hash(3, 0), hash(3, 4));
        let d0 = epochs.seen(&d);
        epochs.changed(&c);
        assert_ne!(epochs.seen(&d), d0);
    }
}
