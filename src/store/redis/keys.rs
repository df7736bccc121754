//! The Redis key schema and the events' wire format, in one place
//! (docs/design.md § Stores): key names under `store.redis.key_prefix`,
//! when Redis may drop a record, and the JSON of an event on the channel.
//!
//! Pure: no I/O. Nothing here may change without a migration — other
//! gates, and a Hawzu back-end, read and write the same keys.

use jiff::Timestamp;

use super::RedisStore;
use crate::store::StoreError;
use crate::token::{TokenHash, TokenRecord};

impl RedisStore {
    pub(super) fn key(&self, kind: &str, rest: &str) -> String {
        let mut k = String::with_capacity(self.inner.prefix.len() + kind.len() + rest.len());
        k.push_str(&self.inner.prefix);
        k.push_str(kind);
        k.push_str(rest);
        k
    }

    pub(super) fn token_key(&self, hash: &TokenHash) -> String {
        self.key("token:", &hash.to_hex())
    }

    pub(super) fn id_key(&self, id: &str) -> String {
        self.key("id:", id)
    }

    pub(super) fn index_key(&self, workspace: Option<&str>) -> String {
        match workspace {
            Some(ws) => self.key("ws:", ws),
            None => self.key("all", ""),
        }
    }

    /// The audit log's positions of one workspace's events, in the audit
    /// stream's slot: `<prefix>audit-ws:<tag><workspace>`.
    pub fn audit_index_key(&self, workspace: &str) -> String {
        format!(
            "{}audit-ws:{}{workspace}",
            self.inner.prefix, self.inner.audit_slot
        )
    }

    /// The set of workspaces with an audit index, in the stream's slot.
    pub(super) fn audit_indexes_key(&self) -> String {
        format!("{}audit-ws{}", self.inner.prefix, self.inner.audit_slot)
    }

    /// The position of the last audit event the indexing of events written
    /// without the index looked at.
    pub(super) fn audit_indexed_key(&self) -> String {
        format!(
            "{}audit-indexed{}",
            self.inner.prefix, self.inner.audit_slot
        )
    }

    /// The claim of the gate doing that indexing now.
    pub(super) fn audit_indexing_key(&self) -> String {
        format!(
            "{}audit-indexing{}",
            self.inner.prefix, self.inner.audit_slot
        )
    }

    /// The claim of a notice written once (`append_once`).
    pub(super) fn notice_key(&self, key: &str) -> String {
        self.key("notice:", key)
    }

    /// The hold of the gate doing fleet chore `name` now (see
    /// [`crate::store::Chores`]).
    pub(super) fn chore_key(&self, name: &str) -> String {
        self.key("chore:", name)
    }

    /// The last result the gate doing fleet chore `name` shared.
    pub(super) fn chore_result_key(&self, name: &str) -> String {
        self.key("chore-result:", name)
    }

    /// The consumer group of webhook `name` on the audit stream.
    pub(super) fn webhook_group(name: &str) -> String {
        format!("webhook:{name}")
    }

    /// The channel every gate subscribes to for invalidations.
    pub fn events_channel(&self) -> String {
        self.key("events", "")
    }

    /// The Redis key prefix of this store.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// When Redis may drop a record: `store.retention` after it was revoked
    /// or after it expires, whichever comes first. `None`: keep it.
    pub(super) fn expire_at(&self, record: &TokenRecord) -> Option<u64> {
        let retention = jiff::SignedDuration::try_from(self.inner.retention).ok()?;
        let after = |t: Timestamp| t.checked_add(retention).ok();
        let at = match (
            record.revoked_at.and_then(after),
            record.expires_at.and_then(after),
        ) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        u64::try_from(at.as_millisecond()).ok()
    }

    /// An event on the channel: `{"op":"invalidate","hash":"<hex>"}`.
    pub(super) fn event(hash: &TokenHash) -> String {
        format!(r#"{{"op":"invalidate","hash":"{}"}}"#, hash.to_hex())
    }
}

/// The hash tag the audit log's other keys end their kind with, so that a
/// cluster puts them in the stream's slot (one script writes both) while
/// every key still begins with the prefix (an ACL by key pattern, a scan
/// by prefix): none when the prefix holds a hash tag (`{hawzu}:`: every
/// key shares it), else `{<prefix>audit}`, whose text is the stream's
/// whole name, what a cluster hashes it by. A prefix with a brace outside
/// a hash tag can be given neither: refused (as config validation does).
pub(super) fn audit_slot(prefix: &str) -> Result<String, StoreError> {
    let tagged = prefix
        .find('{')
        .and_then(|i| prefix[i + 1..].find('}'))
        .is_some_and(|j| j > 0);
    if tagged {
        Ok(String::new())
    } else if !prefix.contains(['{', '}']) {
        Ok(format!("{{{prefix}audit}}"))
    } else {
        Err(StoreError::Unavailable(format!(
            "store.redis.key_prefix {prefix:?}: a brace outside a hash tag; use a prefix without braces, or with one hash tag such as `{{hawzu}}:`"
        )))
    }
}

/// The hash of an `{"op":"invalidate","hash":"<hex>"}` event; `None` for
/// any other message (a probe, another op).
pub(super) fn event_hash(bytes: &[u8]) -> Option<TokenHash> {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        op: &'a str,
        hash: &'a str,
    }
    let event: Event<'_> = serde_json::from_slice(bytes).ok()?;
    (event.op == "invalidate")
        .then(|| TokenHash::from_hex(event.hash))
        .flatten()
}

/// A message no other gate acts on (`op` is not `invalidate`), unique to
/// this attempt.
pub(super) fn probe_payload() -> String {
    format!(r#"{{"op":"probe","id":"{}"}}"#, nonce())
}

/// 16 hex digits, random (a clock-based value is as good for what they
/// tell apart if the OS has no randomness).
pub(super) fn nonce() -> String {
    let mut nonce = [0u8; 8];
    if getrandom::fill(&mut nonce).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nonce = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    nonce.iter().map(|b| format!("{b:02x}")).collect()
}

/// The channel one gate's probes travel on (`id` is the gate's): only that
/// gate subscribes to it, so a probe is delivered once, not to every gate
/// of the fleet as on the events channel (G² deliveries a second). It
/// begins with the events channel's name (an ACL granting `&<prefix>*`
/// covers it) and lies in its hash slot — the events channel's name as its
/// hash tag, or the prefix's own tag — so that on a Cluster the probe's
/// echo proves the subscription is on the shard that carries the events.
/// `None` for a channel name no such name can share a slot with.
pub(super) fn probe_channel(events: &str, id: &str) -> Option<String> {
    use super::shards::key_slot;
    let slot = key_slot(events.as_bytes());
    [
        format!("{events}:probe:{id}"),
        format!("{events}:probe:{{{events}}}{id}"),
    ]
    .into_iter()
    .find(|c| key_slot(c.as_bytes()) == slot)
}

#[cfg(test)]
mod tests {
    use super::audit_slot;

    /// A gate's probe channel lies in the events channel's slot, begins
    /// with its name, and is the gate's own.
    #[test]
    fn a_probe_channel_shares_the_events_channels_slot() {
        use super::super::shards::key_slot;
        use super::probe_channel;
        for prefix in ["hawzu-gate:v1:", "{hawzu}:", "", "a:b:", "x{y}z:"] {
            let events = format!("{prefix}events");
            let a = probe_channel(&events, "0123456789abcdef").unwrap();
            let b = probe_channel(&events, "fedcba9876543210").unwrap();
            for c in [&a, &b] {
                assert!(c.starts_with(&events), "{c}");
                assert_eq!(key_slot(c.as_bytes()), key_slot(events.as_bytes()), "{c}");
            }
            assert_ne!(a, b);
            assert_ne!(a, events);
        }
    }

    /// The indexes' names hash as the stream's (Redis's rule: the text
    /// between the first `{` and the first `}` after it, when not empty;
    /// else the whole name).
    #[test]
    fn audit_indexes_share_the_streams_slot() {
        fn tag(key: &str) -> &str {
            key.find('{')
                .and_then(|i| {
                    let j = key[i + 1..].find('}')?;
                    (j > 0).then(|| &key[i + 1..i + 1 + j])
                })
                .unwrap_or(key)
        }
        for prefix in [
            "hawzu-gate:v1:",
            "{hawzu}:",
            "a{b}c{d}:",
            "a{b}c}:",
            "",
            "p",
        ] {
            let slot = audit_slot(prefix).unwrap();
            let stream = format!("{prefix}audit");
            for kind in ["audit-ws:", "audit-ws", "audit-indexed", "audit-indexing"] {
                let key = format!("{prefix}{kind}{slot}ws_1");
                assert!(key.starts_with(prefix), "{key}");
                assert_eq!(tag(&key), tag(&stream), "{prefix:?} {kind}");
            }
        }
        for prefix in ["a}b:", "}{:", "{}:", "x{:", "p{q"] {
            assert!(audit_slot(prefix).is_err(), "{prefix:?}");
        }
    }
}
