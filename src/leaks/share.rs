//! [`Shares`]: how much of the unverified-body budget
//! (`leaks.max_unverified_bytes`) each client address holds. One address
//! (an IPv6 /64) holds at most one report's worth (`leaks.max_body_bytes`)
//! at a time, so no single stranger keeps the budget full with bodies that
//! trickle in just fast enough, each failing only when cut.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use crate::clients::client_key;

/// Bytes of unverified bodies held, per client address.
#[derive(Debug)]
pub(super) struct Shares {
    held: Mutex<HashMap<u128, usize>>,
    per_address: usize,
}

/// One body's share, given back when dropped.
#[derive(Debug)]
pub(super) struct Share<'a> {
    shares: &'a Shares,
    key: u128,
    bytes: usize,
}

impl Shares {
    pub(super) fn new(per_address: usize) -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
            per_address,
        }
    }

    /// `bytes` more for `client`, if that keeps it within its share.
    pub(super) fn take(&self, client: IpAddr, bytes: usize) -> Option<Share<'_>> {
        let key = client_key(client);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = held.get(&key).copied().unwrap_or(0);
        if now.saturating_add(bytes) > self.per_address {
            return None;
        }
        held.insert(key, now + bytes);
        Some(Share {
            shares: self,
            key,
            bytes,
        })
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let mut held = self
            .shares
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_one_share_and_gets_it_back() {
        let shares = Shares::new(100);
        let a: IpAddr = "203.0.113.66".parse().unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "192.0.2.10".parse().unwrap_or(IpAddr::from([0; 4]));
        let first = shares.take(a, 60);
        assert!(first.is_some());
        assert!(shares.take(a, 60).is_none(), "past its share");
        assert!(shares.take(a, 40).is_some(), "within it");
        assert!(shares.take(b, 100).is_some(), "another address's own");
        drop(first);
        assert!(shares.take(a, 100).is_some(), "given back");
        // An IPv6 /64 is one address.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0; 16]));
        let held = shares.take(v6("2001:db8::1"), 100);
        assert!(held.is_some());
        assert!(shares.take(v6("2001:db8::ffff"), 1).is_none());
        assert!(shares.take(v6("2001:db8:0:1::1"), 1).is_some());
        assert!(shares.held.lock().map(|h| h.len()).unwrap_or(0) > 0);
    }
}
