//! The `[failed_auth]` section and the `trusted_proxies` key: how the gate
//! tells clients apart and limits the ones that keep failing. Owns their
//! types (`IpNet`), defaults and checks; it must never look at a request.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::HumanDuration;

/// Per-client limit on failed authentication: every client address has a
/// bucket of `limit` failures refilled over `window`; once it is empty the
/// client gets 429 `rate_limited` (401 on `/auth/nginx`, which cannot pass a
/// 429) with `Retry-After`, except for tokens the gate holds as valid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailedAuthSettings {
    /// Failures a client may make in a burst, and per `window`; 0 turns the
    /// limit off.
    pub limit: u32,
    /// The time over which `limit` failures are forgiven.
    pub window: HumanDuration,
    /// Most client addresses tracked (least recently seen are dropped first);
    /// bounds the memory to about 400 bytes each (`cargo bench --bench
    /// cache_memory -- clients`).
    pub max_clients: u64,
}

impl Default for FailedAuthSettings {
    fn default() -> Self {
        Self {
            limit: 30,
            window: HumanDuration(Duration::from_secs(60)),
            max_clients: 100_000,
        }
    }
}

impl FailedAuthSettings {
    /// Checks `failed_auth.*`; `invalid(key, message)` builds the error
    /// naming the key at fault.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        if self.limit > 0 {
            if self.window.0 < Duration::from_secs(1) {
                return Err(invalid("failed_auth.window", "must be at least 1s".into()));
            }
            if self.max_clients == 0 {
                return Err(invalid(
                    "failed_auth.max_clients",
                    "must be more than 0 (set failed_auth.limit = 0 to turn the limit off)".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A list of networks; empty entries (an empty environment variable) are
/// skipped.
pub(super) fn ip_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not an IP address or network; write it like 10.0.0.0/8, 127.0.0.1 or fd00::/8"
            )
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        // An IPv4-mapped IPv6 network is the IPv4 network it maps.
        Ok(match addr {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => Self {
                addr: addr.to_canonical(),
                prefix: prefix - 96,
            },
            _ => Self { addr, prefix },
        })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
