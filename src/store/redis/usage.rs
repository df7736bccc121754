//! Usage in Redis, summed across the fleet (docs/design.md § Stores):
//!
//! - `usage:{token_id}:{yyyymmddhh}` — hash `allowed`, `refused`
//!   (`HINCRBY` by every gate's flush), dropped `usage.retention` after the
//!   hour ends;
//! - `usage-day:{token_id}:{yyyymmdd}` — the same per day (what a token
//!   list reads: seven keys per token, not 168);
//! - `usage-clients:{token_id}` — hash `["<address>","<user agent>"]` →
//!   `"<first ms>,<last ms>"`, at most ten fields (the oldest last-seen
//!   goes), a one-key script;
//! - `usage-refusal:{token_id}` — `"<ms> <code>"`, replaced only by a later
//!   refusal, a one-key script.
//!
//! Every command touches one key (Redis Cluster); a flush is one pipeline
//! per [`USAGE_DELTAS_PER_PIPELINE`] tokens (concurrent commands on a
//! cluster).

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use redis::{Cmd, Value};

use super::super::StoreError;
use super::super::usage::{
    ClientSeen, Counts, LastRefusal, UsageDelta, UsageReport, UsageStore, day_label, day_of_hour,
    expires_ms, hour_label,
};
use super::{RedisStore, redis_err};
use crate::token::TokenId;

/// Adds a client to `usage-clients:{id}`: KEYS[1]; ARGV: field, first ms,
/// last ms, most fields kept, retention ms. Drops the clients last seen
/// more than the retention ago (by Redis's clock), then the oldest beyond
/// the most kept.
const ADD_CLIENT: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
local first = tonumber(ARGV[2])
local last = tonumber(ARGV[3])
if old then
  local f, l = string.match(old, '^(%d+),(%d+)$')
  if f then
    if tonumber(f) < first then first = tonumber(f) end
    if tonumber(l) > last then last = tonumber(l) end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f,%.0f', first, last))
-- Clients last seen before the retention (counted back from Redis's own
-- clock, not a gate's) go: the list's TTL is renewed at every use.
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[5])
local kept = redis.call('HGETALL', KEYS[1])
for i = 1, #kept, 2 do
  local l = tonumber(string.match(kept[i + 1], ',(%d+)$') or '0')
  if l < cutoff then redis.call('HDEL', KEYS[1], kept[i]) end
end
while redis.call('HLEN', KEYS[1]) > tonumber(ARGV[4]) do
  local all = redis.call('HGETALL', KEYS[1])
  local oldest, oldest_last = nil, nil
  for i = 1, #all, 2 do
    local l = tonumber(string.match(all[i + 1], ',(%d+)$') or '0')
    if oldest == nil or l < oldest_last then
      oldest = all[i]
      oldest_last = l
    end
  end
  redis.call('HDEL', KEYS[1], oldest)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// Sets `usage-refusal:{id}` unless it holds a later one: KEYS[1]; ARGV:
/// at ms, code, retention ms.
const SET_REFUSAL: &str = r"
local old = redis.call('GET', KEYS[1])
if old then
  local at = tonumber(string.match(old, '^(%d+) ') or '0')
  if at > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return 1
";

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn at_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl RedisStore {
    fn usage_hour_key(&self, id: &str, hour: u32) -> String {
        self.key("usage:", &format!("{id}:{}", hour_label(hour)))
    }

    fn usage_day_key(&self, id: &str, day: u32) -> String {
        self.key("usage-day:", &format!("{id}:{}", day_label(day)))
    }

    fn usage_clients_key(&self, id: &str) -> String {
        self.key("usage-clients:", id)
    }

    fn usage_refusal_key(&self, id: &str) -> String {
        self.key("usage-refusal:", id)
    }
}

/// `HINCRBY` of the non-zero counts, then `PEXPIREAT`.
fn add_counts(cmds: &mut Vec<Cmd>, key: String, counts: Counts, expire_ms: i64) {
    for (field, n) in [("allowed", counts.allowed), ("refused", counts.refused)] {
        if n > 0 {
            let mut c = redis::cmd("HINCRBY");
            c.arg(&key).arg(field).arg(n);
            cmds.push(c);
        }
    }
    let mut c = redis::cmd("PEXPIREAT");
    c.arg(key).arg(expire_ms);
    cmds.push(c);
}

/// `["<address>","<user agent>"]`: a hash field that splits back for sure.
fn client_field(c: &ClientSeen) -> String {
    serde_json::to_string(&(&c.address, &c.user_agent)).unwrap_or_default()
}

fn read_client(field: &str, value: &str) -> Option<ClientSeen> {
    let (address, user_agent): (String, String) = serde_json::from_str(field).ok()?;
    let (first, last) = value.split_once(',')?;
    Some(ClientSeen {
        address,
        user_agent,
        first_seen: at_ms(first.parse().ok()?),
        last_seen: at_ms(last.parse().ok()?),
    })
}

fn read_counts(values: &[Option<u64>]) -> Counts {
    Counts {
        allowed: values.first().copied().flatten().unwrap_or(0),
        refused: values.get(1).copied().flatten().unwrap_or(0),
    }
}

fn hmget(key: String) -> Cmd {
    let mut c = redis::cmd("HMGET");
    c.arg(key).arg("allowed").arg("refused");
    c
}

/// Deltas per pipeline (about five commands each, one of them a script).
/// The pipeline shares the connection with token lookups, which wait behind
/// it: a few milliseconds for this many, where one pipeline for a whole
/// flush of 50k tokens held them past `store.timeout` (503s, and a timed-out
/// flush that Redis had applied was carried and counted again).
pub const USAGE_DELTAS_PER_PIPELINE: usize = 256;

impl UsageStore for RedisStore {
    fn deltas_per_call(&self) -> usize {
        USAGE_DELTAS_PER_PIPELINE
    }

    async fn add_usage(&self, batch: &[UsageDelta], retention: Duration) -> Result<(), StoreError> {
        let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let mut cmds = Vec::new();
        for d in batch {
            let id = d.token_id.as_str();
            if !d.counts.is_zero() {
                let day = day_of_hour(d.hour);
                add_counts(
                    &mut cmds,
                    self.usage_hour_key(id, d.hour),
                    d.counts,
                    expires_ms(d.hour, retention),
                );
                add_counts(
                    &mut cmds,
                    self.usage_day_key(id, day),
                    d.counts,
                    expires_ms(day * 24 + 23, retention),
                );
            }
            for c in &d.clients {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(ADD_CLIENT)
                    .arg(1)
                    .arg(self.usage_clients_key(id))
                    .arg(client_field(c))
                    .arg(ms(c.first_seen))
                    .arg(ms(c.last_seen))
                    .arg(super::super::usage::MAX_CLIENTS)
                    .arg(keep);
                cmds.push(cmd);
            }
            if let Some(r) = &d.last_refusal {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(SET_REFUSAL)
                    .arg(1)
                    .arg(self.usage_refusal_key(id))
                    .arg(ms(r.at))
                    .arg(&r.code)
                    .arg(keep);
                cmds.push(cmd);
            }
        }
        if cmds.is_empty() {
            return Ok(());
        }
        self.timed(|mut conn| async move {
            let _: Vec<Value> = conn.each(cmds).await?;
            Ok(())
        })
        .await
    }

    async fn usage(&self, id: &TokenId, first: u32, last: u32) -> Result<UsageReport, StoreError> {
        let id = id.as_str();
        let hours: Vec<u32> = (first..=last).collect();
        // One pipeline per `USAGE_DELTAS_PER_PIPELINE` hours, one after
        // another, each bounded by the store timeout: a window of months
        // (2,161 hours at 90 days, up to 87,841 at the longest retention)
        // in one pipeline held the shared connection — the request path's
        // cache misses behind it — for as long as Redis took over it.
        let mut counts: Vec<Vec<Option<u64>>> = Vec::with_capacity(hours.len());
        for chunk in hours.chunks(USAGE_DELTAS_PER_PIPELINE) {
            let cmds = chunk
                .iter()
                .map(|h| hmget(self.usage_hour_key(id, *h)))
                .collect();
            let part: Vec<Vec<Option<u64>>> = self
                .timed(|mut conn| async move { conn.each(cmds).await })
                .await?;
            counts.extend(part);
        }
        let clients_key = self.usage_clients_key(id);
        let refusal_key = self.usage_refusal_key(id);
        self.timed(|mut conn| async move {
            let fields: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&clients_key)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let refusal: Option<String> = redis::cmd("GET")
                .arg(&refusal_key)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let hours = hours
                .into_iter()
                .zip(counts)
                .map(|(h, v)| (h, read_counts(&v)))
                .filter(|(_, c)| !c.is_zero())
                .collect();
            let mut clients: Vec<ClientSeen> = fields
                .iter()
                .filter_map(|(f, v)| read_client(f, v))
                .collect();
            clients.sort_by_key(|c| std::cmp::Reverse(c.last_seen));
            let last_refusal = refusal.and_then(|v| {
                let (at, code) = v.split_once(' ')?;
                Some(LastRefusal {
                    code: code.to_owned(),
                    at: at_ms(at.parse().ok()?),
                })
            });
            Ok(UsageReport {
                hours,
                clients,
                last_refusal,
            })
        })
        .await
    }

    async fn daily_totals(
        &self,
        ids: &[TokenId],
        first_day: u32,
        last_day: u32,
    ) -> Result<Vec<Counts>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let days = (last_day + 1).saturating_sub(first_day) as usize;
        // As many tokens per pipeline as keep it near
        // `USAGE_DELTAS_PER_PIPELINE` commands (see `usage`).
        let per_pipeline = (USAGE_DELTAS_PER_PIPELINE / days.max(1)).max(1);
        let mut totals = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(per_pipeline) {
            let cmds = chunk
                .iter()
                .flat_map(|id| {
                    (first_day..=last_day).map(|d| hmget(self.usage_day_key(id.as_str(), d)))
                })
                .collect();
            let part: Vec<Counts> = self
                .timed(|mut conn| async move {
                    let counts: Vec<Vec<Option<u64>>> = conn.each(cmds).await?;
                    Ok(counts
                        .chunks(days.max(1))
                        .map(|per_token| {
                            let mut total = Counts::default();
                            for v in per_token {
                                total.add(read_counts(v));
                            }
                            total
                        })
                        .collect())
                })
                .await?;
            totals.extend(part);
        }
        Ok(totals)
    }
}
