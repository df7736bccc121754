//! The Lua script and the command forms of the Redis store's writes.
//!
//! Each touches one key (a cluster routes it to one slot); none does I/O
//! by itself.

/// Replaces a record only if it still holds the expected bytes.
/// ARGV: expected, new, expire-at in ms since the epoch (0 = no expiry).
pub(super) const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
";

/// Deletes a key only if it holds the expected bytes.
/// ARGV: expected.
pub(super) const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
";

/// Adds an audit event's position to its workspace's index (a sorted set
/// of positions, every score 0, so ordered by the members' bytes) and
/// drops the oldest beyond the log's bound.
/// ARGV: the member, the most members kept.
pub(super) const AUDIT_INDEX: &str = r"
redis.call('ZADD', KEYS[1], 0, ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if over > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1) end
return 1
";

/// `SET key value [PXAT ms]`.
pub(super) fn set_cmd(key: &str, value: &[u8], expire_at: Option<u64>, nx: bool) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ms) = expire_at {
        cmd.arg("PXAT").arg(ms);
    }
    if nx {
        cmd.arg("NX");
    }
    cmd
}
