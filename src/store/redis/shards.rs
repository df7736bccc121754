//! Whether a Redis Cluster can be read: one `EXISTS` per shard, each on a
//! key (under the store's prefix) that hashes into a slot the shard's
//! master serves, routed by the cluster client like any token read.
//!
//! Why not `PING` to every master: the cluster client forgets a node it
//! cannot reconnect to (after a slot refresh), and a `PING` to "all
//! masters" then skips that shard and succeeds while a third of the tokens
//! cannot be read; a read also meets what a `PING` does not (`CLUSTERDOWN`,
//! a slot map that still names a dead master). Readiness and the
//! invalidation listener's wait before a cache drop both mean "every token
//! can be read again", so both ask this.

use std::collections::BTreeMap;

use redis::Value;
use redis::cluster_async::ClusterConnection;

use super::connect::Conn;
use super::redis_err;
use crate::store::StoreError;

/// Hash slots of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// Candidate tags tried per shard; every slot is reached well before (see
/// the tests), so running out means the slot map was not a real one.
const MAX_TRIES: u32 = 1 << 20;

/// Every shard holding the store's keys answers a read within the call.
pub(super) async fn every_shard_reads(
    conn: &ClusterConnection,
    prefix: &str,
) -> Result<(), StoreError> {
    let keys = if pinned(prefix) {
        // The prefix has a hash tag: every key of the store is in one slot.
        vec![probe_key(prefix, 0)]
    } else {
        let slots: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn.clone())
            .await
            .map_err(redis_err)?;
        let shards = shard_ranges(&slots)?;
        if shards.is_empty() {
            return Err(StoreError::Unavailable(
                "the cluster serves no hash slot".into(),
            ));
        }
        shards
            .iter()
            .map(|ranges| {
                (0..MAX_TRIES)
                    .find(|n| {
                        let slot = key_slot(probe_key(prefix, *n).as_bytes());
                        ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
                    })
                    .map(|n| probe_key(prefix, n))
                    .ok_or_else(|| {
                        StoreError::Unavailable("no key found for a cluster shard's slots".into())
                    })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let reads = keys
        .into_iter()
        .map(|key| {
            let mut exists = redis::cmd("EXISTS");
            exists.arg(key);
            exists
        })
        .collect();
    Conn::Cluster(conn.clone())
        .each::<i64>(reads)
        .await
        .map(drop)
}

/// The key read for the `n`th candidate tag (never written).
fn probe_key(prefix: &str, n: u32) -> String {
    format!("{prefix}ready:{{{n}}}")
}

/// Whether the prefix alone decides the hash tag of every key.
fn pinned(prefix: &str) -> bool {
    let (a, b) = (probe_key(prefix, 0), probe_key(prefix, 1));
    matches!((hash_tag(a.as_bytes()), hash_tag(b.as_bytes())), (Some(a), Some(b)) if a == b)
}

/// Slot ranges, first and last slot included.
type Ranges = Vec<(u16, u16)>;

/// The slot ranges of each master in a `CLUSTER SLOTS` answer: one entry
/// per master (`[start, end, [host, port, …], replicas…]` per range).
fn shard_ranges(slots: &Value) -> Result<Vec<Ranges>, StoreError> {
    let bad = || StoreError::Unavailable("unexpected CLUSTER SLOTS answer".into());
    let Value::Array(entries) = slots else {
        return Err(bad());
    };
    // Keyed by the master's host and port.
    let mut by_master: BTreeMap<(Vec<u8>, i64), Ranges> = BTreeMap::new();
    for entry in entries {
        let Value::Array(fields) = entry else {
            return Err(bad());
        };
        let (Some(start), Some(end), Some(Value::Array(master))) = (
            slot_of(fields.first()),
            slot_of(fields.get(1)),
            fields.get(2),
        ) else {
            return Err(bad());
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => b.clone(),
            Some(Value::SimpleString(s)) => s.clone().into_bytes(),
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad());
        };
        by_master
            .entry((host, *port))
            .or_default()
            .push((start, end));
    }
    Ok(by_master.into_values().collect())
}

fn slot_of(v: Option<&Value>) -> Option<u16> {
    match v {
        Some(Value::Int(n)) => u16::try_from(*n).ok().filter(|s| *s < SLOTS),
        _ => None,
    }
}

/// The hash slot of `key`, by Redis Cluster's rule: CRC16 (XMODEM) of the
/// hash tag (the part inside the first `{…}`, when not empty) or of the
/// whole key, modulo 16,384.
pub(super) fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key).unwrap_or(key)) % SLOTS
}

fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|b| *b == b'{')?;
    let close = key[open + 1..].iter().position(|b| *b == b'}')?;
    let tag = &key[open + 1..open + 1 + close];
    (!tag.is_empty()).then_some(tag)
}

#[cfg(test)]
mod tests {
    use redis::cluster_routing::Slot;

    use super::*;

    #[test]
    fn slots_agree_with_the_cluster_client() {
        for key in [
            "",
            "a",
            "hawzu:token:00ff",
            "p:ready:{7}",
            "{user1000}.following",
            "foo{}{bar}",
            "foo{{bar}}zap",
            "foo{bar}{zap}",
            "a{b",
        ] {
            assert_eq!(
                Slot::new(key_slot(key.as_bytes())),
                Some(Slot::for_key(key)),
                "{key}"
            );
        }
    }

    #[test]
    fn known_slots() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    }

    #[test]
    fn every_slot_has_a_probe_key_well_within_the_bound() {
        for prefix in ["", "hawzu:", "a{b:"] {
            let mut seen = vec![false; usize::from(SLOTS)];
            let mut left = SLOTS;
            let mut n = 0;
            while left > 0 {
                assert!(n < MAX_TRIES / 4, "{prefix}: {left} slots unreached");
                let s = usize::from(key_slot(probe_key(prefix, n).as_bytes()));
                if !seen[s] {
                    seen[s] = true;
                    left -= 1;
                }
                n += 1;
            }
        }
    }

    #[test]
    fn a_prefix_with_a_hash_tag_pins_every_key() {
        assert!(pinned("{hawzu}:"));
        assert!(pinned("app:{x}:"));
        assert!(!pinned("hawzu:"));
        assert!(!pinned("a{b:"));
        assert!(!pinned("{}:"));
    }

    #[test]
    fn cluster_slots_answers_group_by_master() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |a: i64, b: i64, port: i64| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                node("127.0.0.1", port),
                node("127.0.0.1", port + 1),
            ])
        };
        let answer = Value::Array(vec![
            range(0, 5460, 7000),
            range(5461, 10922, 7002),
            range(10923, 16383, 7004),
            range(100, 100, 7002),
        ]);
        let mut shards = shard_ranges(&answer).unwrap();
        shards.sort();
        assert_eq!(
            shards,
            vec![
                vec![(0, 5460)],
                vec![(5461, 10922), (100, 100)],
                vec![(10923, 16383)],
            ]
        );
        assert!(shard_ranges(&Value::Array(vec![Value::Int(1)])).is_err());
        assert!(
            shard_ranges(&Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(SLOTS.into()),
                node("h", 1),
            ])]))
            .is_err(),
            "a slot past the last one"
        );
    }
}
