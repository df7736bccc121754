//! The `[failed_auth]` section and the `trusted_proxies` key: how the gate
//! tells clients apart and limits the ones that keep failing. Owns their
//! defaults and checks; it must never look at a request.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::duration::HumanDuration;
/// The network type lives with the policy (a token's `allow_from` holds
/// them too); re-exported here for `trusted_proxies`.
pub use crate::policy::net::IpNet;

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
    /// bounds the memory to about 330 bytes each (`cargo bench --bench
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
            self.window
                .within(Duration::from_secs(1), Duration::from_secs(30 * 86_400))
                .map_err(|why| invalid("failed_auth.window", why))?;
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
/// skipped, and a network with address bits beyond its prefix
/// (`10.1.2.3/8`) is refused as ambiguous, as in a token's `allow_from`.
pub(super) fn ip_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            let net: IpNet = s.parse().map_err(serde::de::Error::custom)?;
            if net.has_host_bits() {
                return Err(serde::de::Error::custom(format!(
                    "`{s}` has address bits set beyond its prefix; write the network's first address (like {})",
                    net.network()
                )));
            }
            Ok(net)
        })
        .collect()
}

/// A warning for each `trusted_proxies` entry that trusts every address:
/// every client is then a proxy, and names any address it likes.
pub(crate) fn trusting_everyone(nets: &[IpNet]) -> Vec<String> {
    nets.iter()
        .filter(|n| n.prefix() == 0)
        .map(|n| {
            format!(
                "trusted_proxies lists {n}, every address: every client is then a trusted proxy and names any address it likes in X-Forwarded-For (another client's failed-auth bucket, an address a token's allow_from admits); list only your proxies' addresses"
            )
        })
        .collect()
}
