//! The Lua script and the command forms of the Redis store's writes.
//!
//! Each touches one key (a cluster routes it to one slot), but the audit
//! log's, whose keys share the stream's slot (`audit_index_key`); none
//! does I/O by itself.

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

/// Takes a chore's hold for a holder when nobody holds it, or extends it
/// when that holder does; answers 1 then, 0 while another holds it.
/// ARGV: the holder's value, the hold in ms.
pub(super) const HOLD_CHORE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// A stream id as a member of a workspace's audit index: both parts in 20
/// digits, so that the members' bytes sort as the positions do (as
/// `redis::audit::member`).
const MEMBER: &str = r"
local function member(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return string.rep('0', 20 - #ms) .. ms .. '-' .. string.rep('0', 20 - #seq) .. seq
end
local function trim(stream, index)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  if first then
    redis.call('ZREMRANGEBYLEX', index, '-', '(' .. member(first[1]))
  else
    redis.call('DEL', index)
  end
end
";

/// Appends an audit event and indexes it under its workspace, in one
/// step: the index never lacks an event the stream has, and what the
/// stream has trimmed leaves the index with it.
/// KEYS: the stream, the workspace's index, the set of indexed
/// workspaces (one hash slot). ARGV: the stream's bound, the event's JSON,
/// the workspace. Answers the event's id.
pub(super) fn audit_append() -> String {
    format!(
        "{MEMBER}{}",
        r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[2])
redis.call('ZADD', KEYS[2], 0, member(id))
redis.call('SADD', KEYS[3], ARGV[3])
trim(KEYS[1], KEYS[2])
return id
"
    )
}

/// Drops from a workspace's index the positions the stream has trimmed,
/// and the workspace from the set of indexed ones once its index is empty.
/// KEYS and ARGV[1] as [`audit_append`]'s (ARGV: the workspace).
pub(super) fn audit_trim() -> String {
    format!(
        "{MEMBER}{}",
        r"
trim(KEYS[1], KEYS[2])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return 1
"
    )
}

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
