//! The unverified-body budget (`leaks.max_unverified_bytes`), counted by
//! the bytes of GitHub bodies received before their signatures are
//! checked: [`Held`], one body's part of it, grown as its bytes arrive;
//! [`Shares`], what each client address holds of it — one report's worth
//! (`leaks.max_body_bytes`) at most per address (an IPv6 /64). A body that
//! trickles in holds what it sent, not what it declared; one that sends
//! fast then stalls holds at most one report's worth per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use prometheus::IntGauge;
use tokio::sync::Semaphore;

use crate::clients::client_key;

/// Bytes of unverified bodies held, per client address.
#[derive(Debug)]
pub(super) struct Shares {
    held: Mutex<HashMap<u128, usize>>,
    per_address: usize,
    /// All bodies' bytes held (`hawzu_gate_leak_unverified_bytes`).
    gauge: IntGauge,
}

/// The bytes one body holds of the budget and of its address's share,
/// given back when dropped.
#[derive(Debug)]
pub(super) struct Held<'a> {
    budget: &'a Semaphore,
    shares: &'a Shares,
    key: u128,
    bytes: usize,
}

/// Why [`Held::grow`] could not take more.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Exhausted {
    /// The gate-wide budget.
    Budget,
    /// This address's share.
    Share,
}

impl Held<'_> {
    /// `bytes` more, if the budget and the address's share have them.
    pub(super) fn grow(&mut self, bytes: usize) -> Result<(), Exhausted> {
        {
            let mut held = self
                .shares
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = held.get(&self.key).copied().unwrap_or(0);
            if now.saturating_add(bytes) > self.shares.per_address {
                return Err(Exhausted::Share);
            }
            let permits = u32::try_from(bytes).map_err(|_| Exhausted::Budget)?;
            self.budget
                .try_acquire_many(permits)
                .map_err(|_| Exhausted::Budget)?
                .forget();
            held.insert(self.key, now + bytes);
        }
        self.bytes += bytes;
        self.shares.gauge.add(gauge_bytes(bytes));
        Ok(())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.add_permits(self.bytes);
        self.shares.gauge.sub(gauge_bytes(self.bytes));
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

impl Shares {
    /// A body from `client`, holding nothing yet of `budget`.
    pub(super) fn hold<'a>(&'a self, budget: &'a Semaphore, client: IpAddr) -> Held<'a> {
        Held {
            budget,
            shares: self,
            key: client_key(client),
            bytes: 0,
        }
    }

    /// Shares of one report's worth (`per_address` bytes) each, all
    /// bodies' bytes shown on `gauge`.
    pub(super) fn new(per_address: usize, gauge: IntGauge) -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
            per_address,
            gauge,
        }
    }
}

/// `bytes` as the gauge counts them (a budget is far below `i64::MAX`).
fn gauge_bytes(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_holds_what_it_received_within_its_address_share_and_gives_it_back() {
        let budget = Semaphore::new(250);
        let gauge = IntGauge::new("held", "bytes held").unwrap_or_else(|e| panic!("{e}"));
        let shares = Shares::new(100, gauge.clone());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0; 4]));
        let mut a = shares.hold(&budget, ip("203.0.113.66"));
        assert_eq!(a.grow(60), Ok(()));
        let mut a2 = shares.hold(&budget, ip("203.0.113.66"));
        assert_eq!(
            a2.grow(60),
            Err(Exhausted::Share),
            "past the address's share"
        );
        assert_eq!(a2.grow(40), Ok(()), "within it");
        let mut b = shares.hold(&budget, ip("192.0.2.10"));
        assert_eq!(b.grow(100), Ok(()), "another address's own");
        let mut c = shares.hold(&budget, ip("198.51.100.1"));
        assert_eq!(c.grow(60), Err(Exhausted::Budget), "250 − 200 left");
        assert_eq!(budget.available_permits(), 50);
        assert_eq!(gauge.get(), 200, "the gauge shows what is held");
        drop((a, a2));
        assert_eq!(budget.available_permits(), 150, "given back");
        assert_eq!(gauge.get(), 100);
        assert_eq!(c.grow(100), Ok(()));
        // An IPv6 /64 is one address.
        let mut d = shares.hold(&budget, ip("2001:db8::1"));
        assert_eq!(d.grow(40), Ok(()));
        let mut e = shares.hold(&budget, ip("2001:db8::ffff"));
        assert_eq!(e.grow(61), Err(Exhausted::Share));
        drop((b, c, d, e));
        assert_eq!(budget.available_permits(), 250);
        assert_eq!(gauge.get(), 0);
        assert!(shares.held.lock().map(|h| h.is_empty()).unwrap_or(false));
    }
}
