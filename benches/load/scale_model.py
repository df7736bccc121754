#!/usr/bin/env python3
"""The fleet model of docs/scale.md (issue 16 item 6), from one
`run.py --misses` result.

    python3 benches/load/scale_model.py benches/load/results-<commit>-misses.json
    python3 benches/load/scale_model.py RESULTS --tokens 1e8 --rps 1e6 --json model.json

Two parts:

1. The check: the cache formulas below, and an event simulation of the
   same traffic (Zipf(s) over the measured token count, the measured
   request rate of every wrk run and the gaps between them, the gate's
   cache.ttl and max_entries, LRU and a TinyLFU-like admission), against
   what the gate counted in the 1M-token run: hit ratio, store reads and
   Redis commands per request.
2. The fleet: every figure is a measured quantity from the results file
   scaled by a stated formula, for --tokens tokens and --rps requests/s.

The formulas (Poisson arrivals; token i has probability p_i = i^-s / H(N, s)
and rate λ_i = r p_i at one gate that takes r requests/s):

- A cached record lives exactly `ttl` (T) after it is read; the next request
  after that reads it again. So a token is read λ/(1 + λT) times a second,
  is cached a fraction λT/(1 + λT) of the time, and one gate's
      store reads/s  m(r) = Σ_i λ_i / (1 + λ_i T)
      hit ratio      h(r) = 1 - m(r) / r
      live entries   E(r) = Σ_i λ_i T / (1 + λ_i T)
- With max_entries C < E(r), an admission by frequency (TinyLFU) keeps
  about the most requested tokens: the first K ranks such that their live
  entries fill C; every request for a rank beyond K is read.
- Writes per read (the gate's own, measured as Redis commands per request
  in the run): a read record is a new cache entry whose first use writes
  `last_used_at` (GET id, GET token, EVALSHA of a compare-and-set running
  GET and SET) and notes the client (EVAL running HGET, HSET, HLEN,
  PEXPIRE); every token used in a 5 s flush adds HINCRBY and PEXPIREAT to
  its hour and its day key: 4 × Σ_i (1 - e^(-5 λ_i)) / 5 per second.
"""
import argparse
import bisect
import json
import math
import random
import sys
from collections import OrderedDict

# --- Zipf sums over up to 10^8 ranks: exact up to EXACT, then an integral ---

EXACT = 100_000


def harmonic(n, s):
    """H(n, s) = Σ_{i<=n} i^-s."""
    head = sum(i ** -s for i in range(1, min(n, EXACT) + 1))
    if n <= EXACT:
        return head
    a, b = EXACT + 0.5, n + 0.5
    return head + (a ** (1 - s) - b ** (1 - s)) / (s - 1)


def zsum(f, n, s, h=None):
    """Σ_{i<=n} f(p_i) with p_i = i^-s / H(n, s): exact for the first EXACT
    ranks, Simpson's rule over log(rank) for the rest."""
    h = h or harmonic(n, s)
    head = sum(f(i ** -s / h) for i in range(1, min(n, EXACT) + 1))
    if n <= EXACT:
        return head
    lo, hi = math.log(EXACT + 0.5), math.log(n + 0.5)
    steps = 4000
    width = (hi - lo) / steps
    total = 0.0
    for k in range(steps + 1):
        u = lo + k * width
        x = math.exp(u)
        weight = 1 if k in (0, steps) else (4 if k % 2 else 2)
        total += weight * f(x ** -s / h) * x
    return head + total * width / 3


def ttl_model(rate, n, s, ttl, h=None):
    """One gate at `rate` req/s with cache.ttl `ttl` and room for all:
    store reads/s, hit ratio, live entries."""
    reads = zsum(lambda p: rate * p / (1 + rate * p * ttl), n, s, h)
    live = zsum(lambda p: rate * p * ttl / (1 + rate * p * ttl), n, s, h)
    return {"reads_per_s": reads, "hit_ratio": 1 - reads / rate, "live_entries": live}


def admitted_model(rate, n, s, ttl, capacity):
    """As `ttl_model` with at most `capacity` entries, kept for the most
    requested ranks (TinyLFU-like): ranks 1..K fill the capacity, every
    request for a rank beyond K is read."""
    h = harmonic(n, s)
    live = reads = mass = 0.0
    k = 0
    while k < n:
        p = (k + 1) ** -s / h
        lam = rate * p
        entry = lam * ttl / (1 + lam * ttl)
        if live + entry > capacity:
            break
        live += entry
        reads += lam / (1 + lam * ttl)
        mass += p
        k += 1
    reads += rate * (1 - mass)
    return {"reads_per_s": reads, "hit_ratio": 1 - reads / rate, "admitted_ranks": k}


def entries_for(rate, n, s, ttl, targets, limit=20_000_000):
    """For each hit ratio in `targets`, the fewest cache entries that reach
    it when the most requested ranks are the ones kept (`admitted_model`):
    {target: entries}, None for a target beyond the ttl's ceiling or
    `limit` ranks."""
    h = harmonic(n, s)
    ceiling = ttl_model(rate, n, s, ttl, h)["hit_ratio"]
    left = sorted(t for t in targets if t <= ceiling)
    out = {t: None for t in targets}
    if not left:
        return out
    live = reads_head = mass = 0.0
    for k in range(1, min(n, limit) + 1):
        p = k ** -s / h
        lam = rate * p
        live += lam * ttl / (1 + lam * ttl)
        reads_head += lam / (1 + lam * ttl)
        mass += p
        hit = 1 - (reads_head + rate * (1 - mass)) / rate
        while left and hit >= left[0]:
            out[left.pop(0)] = round(live)
        if not left:
            break
    return out


def distinct_per(seconds, rate, n, s, h=None):
    """Expected distinct tokens among the requests of `seconds` at `rate`."""
    return zsum(lambda p: 1 - math.exp(-rate * p * seconds), n, s, h)


def commands_per_request(rate, reads_per_s, n, s, h=None):
    """Redis commands executed per request (scripts' own commands
    included), by the module docstring's accounting."""
    per_read = {"get (lookup)": 1, "get (last_used: id, token)": 2, "evalsha (last_used)": 1,
                "get+set (in the compare-and-set)": 2, "eval (client)": 1,
                "hget+hset+hlen+pexpire (in the client script)": 4}
    flush = 4 * distinct_per(5, rate, n, s, h) / 5
    out = {k: v * reads_per_s / rate for k, v in per_read.items()}
    out["hincrby+pexpireat (usage flush, hour and day)"] = flush / rate
    return out


# --- the event simulation ---


class ZipfSampler:
    def __init__(self, n, s, seed):
        self.cdf = []
        acc = 0.0
        for i in range(1, n + 1):
            acc += i ** -s
            self.cdf.append(acc)
        self.total = acc
        self.rng = random.Random(seed)

    def __call__(self):
        return bisect.bisect_right(self.cdf, self.rng.random() * self.total)


def simulate(phases, n, s, ttl, capacity, policy, seed=1):
    """Hit ratio per phase of a cache with `ttl` (entries live ttl from
    their read) and `capacity` under Zipf(s) over n ranks; `phases` =
    [(requests, seconds, gap_after_s)]; policy "lru" or "tinylfu" (LRU
    order, a new entry admitted only when its frequency beats the LRU
    victim's; frequencies halved every 10 × capacity requests)."""
    draw = ZipfSampler(n, s, seed)
    cache = OrderedDict()  # rank -> read at (s)
    freq = {}
    seen = 0
    sample_size = 10 * capacity
    t = 0.0
    out = []
    for requests, seconds, gap in phases:
        step = seconds / max(requests, 1)
        hits = 0
        for _ in range(requests):
            t += step
            k = draw()
            if policy == "tinylfu":
                freq[k] = freq.get(k, 0) + 1
                seen += 1
                if seen >= sample_size:
                    freq = {key: v // 2 for key, v in freq.items() if v > 1}
                    seen //= 2
            at = cache.get(k)
            if at is not None and t - at < ttl:
                hits += 1
                cache.move_to_end(k)
                continue
            if at is not None:
                del cache[k]
            if len(cache) >= capacity:
                victim = next(iter(cache))
                if t - cache[victim] >= ttl:
                    del cache[victim]
                elif policy == "tinylfu" and freq.get(k, 0) <= freq.get(victim, 0):
                    continue  # not admitted
                else:
                    del cache[victim]
            cache[k] = t
        out.append(hits / requests if requests else None)
        t += gap
    return out


# --- reading the results ---


def phases_of(gate):
    """(requests, seconds, gap) of every wrk run against one gate."""
    out = []
    for p in gate["phases"]:
        w = p["wrk"]
        out.append((w["requests"], w["seconds"], max(0.0, w["wall_s"] - w["seconds"])))
    return out


def check(results, sim):
    """Part 1: formulas and simulation against the measured run."""
    m = results["misses"]
    n, s, ttl = m["tokens"], m["zipf_s"], m["ttl_s"]
    h = harmonic(n, s)
    out = {}
    for name, gate in m["gates"].items():
        cap = gate["max_entries"]
        rows = []
        sims = {}
        if sim:
            policies = ("ttl",) if cap >= n else ("lru", "tinylfu")
            for policy in policies:
                print(f"simulating {name} ({policy}) …", file=sys.stderr)
                sims[policy] = simulate(phases_of(gate), n, s, ttl, min(cap, n),
                                        "lru" if policy == "ttl" else policy)
        for i, p in enumerate(gate["phases"]):
            rate = p["wrk"]["requests"] / p["wrk"]["seconds"]
            model = ttl_model(rate, n, s, ttl, h) if cap >= n else admitted_model(rate, n, s, ttl, cap)
            cmds = commands_per_request(rate, model["reads_per_s"], n, s, h)
            row = {
                "phase": p["phase"],
                "rate": round(rate),
                "measured_hit_ratio": p["hit_ratio"],
                "formula_hit_ratio": round(model["hit_ratio"], 4),
                "measured_reads_per_request": p["store_gets_per_request"],
                "formula_reads_per_request": round(model["reads_per_s"] / rate, 4),
                "measured_redis_commands_per_request": p["redis_commands_per_request"],
                "formula_redis_commands_per_request": round(sum(cmds.values()), 4),
                "measured_cache_entries": p["cache_entries"],
            }
            if cap >= n:
                row["formula_live_entries"] = round(model["live_entries"])
            for policy, hits in sims.items():
                row[f"simulated_hit_ratio_{policy}"] = round(hits[i], 4)
            rows.append(row)
        out[name] = {"max_entries": cap, "phases": rows}
    return out


def fleet(results, a):
    """Part 2: the fleet, each figure from a measurement scaled by a formula."""
    m = results["misses"]
    n, s, rps, ttl = int(a.tokens), a.zipf, a.rps, m["ttl_s"]
    h = harmonic(n, s)
    mem = m["redis_memory"]
    per_key = mem["bytes_per_key"]
    out = {"inputs": {"tokens": n, "rps": rps, "zipf_s": s, "ttl_s": ttl, "measured_commit": results["commit"]}}

    # 1. Redis memory per token.
    token_bytes = per_key.get("token:", 0)
    used_token_bytes = mem.get("bytes_per_key_token_with_last_used", token_bytes)
    at_rest = {
        "token:{hash} (record JSON)": used_token_bytes,
        "id:{id}": per_key.get("id:", 0),
        "ws:{workspace} member": mem.get("bytes_per_member_ws", 0),
        "all member": mem.get("bytes_per_member_all", 0),
    }
    per_token = sum(at_rest.values())
    usage_key = {"hour": per_key.get("usage:", 0), "day": per_key.get("usage-day:", 0),
                 "clients": per_key.get("usage-clients:", 0)}
    hour_distinct = distinct_per(3600, rps, n, s, h)
    day_distinct = distinct_per(86400, rps, n, s, h)
    retention_days = a.usage_retention_days
    usage_bytes = (hour_distinct * 24 * retention_days * usage_key["hour"]
                   + day_distinct * retention_days * usage_key["day"]
                   + min(n, distinct_per(retention_days * 86400, rps, n, s, h)) * usage_key["clients"])
    out["redis_memory"] = {
        "bytes_per_token_at_rest": at_rest,
        "bytes_per_token": round(per_token, 1),
        "expiry_bytes_if_the_token_expires": mem.get("expiry_bytes_per_key"),
        "used_memory_per_token_seeded": results.get("seed", {}).get("used_memory_bytes_per_token"),
        "tokens_gib": round(n * per_token / 2 ** 30, 1),
        "usage_bytes_per_key": usage_key,
        "distinct_tokens_per_hour": round(hour_distinct),
        "distinct_tokens_per_day": round(day_distinct),
        "usage_retention_days": retention_days,
        "usage_gib": round(usage_bytes / 2 ** 30, 1),
    }

    # 5. CPU per million requests (needed for the gate count).
    cases = results.get("cases", {})
    cpu = {}
    for c in ("d", "f"):
        if c in cases:
            cpu[f"case {c}: {cases[c]['case']}"] = round(cases[c]["cpu_us_per_request"]["gate"], 2)
    zipf_gate = m["gates"]["default"]["median"]
    cpu["Zipf misses (default cache)"] = zipf_gate["cpu_us_per_request"]["gate"]
    redis_us = zipf_gate["cpu_us_per_request"]["redis"]
    gate_us = zipf_gate["cpu_us_per_request"]["gate"]
    out["cpu"] = {
        "gate_cpu_us_per_request": cpu,
        "gate_cpu_s_per_million": {k: round(v, 1) for k, v in cpu.items()},
        "redis_cpu_s_per_million_zipf": round(redis_us, 2),
        "fleet_gate_cores_busy": round(rps * gate_us / 1e6),
    }
    gates_by_cpu = math.ceil(rps * gate_us / 1e6 / (a.gate_cores * a.gate_util))

    # Per gate count: reads, writes, hit ratio, entries, shards.
    bench = m["redis_benchmark"]["pipeline_16"]
    cmd_us = bench["redis_cpu_us_per_command"]
    measured_cmds = zipf_gate["redis_commands_per_request"]
    if redis_us and measured_cmds:
        cmd_us = redis_us / measured_cmds  # Redis CPU per executed command in the gate's own mix
    shard_ops = 1e6 / cmd_us * a.shard_util
    fan = m["fanout"]["by_subscribers"]
    biggest = fan[max(fan, key=int)]
    deliver_us, deliver_bytes = biggest["redis_cpu_us_per_delivery"], biggest["output_bytes_per_delivery"]
    rows = []
    for g in sorted(set(a.gates + [gates_by_cpu])):
        r = rps / g
        model = ttl_model(r, n, s, ttl, h)
        cmds = commands_per_request(r, model["reads_per_s"], n, s, h)
        fleet_cmds = rps * sum(cmds.values())
        probes = g  # every gate publishes one probe a second on its own channel: only it receives it
        shards_ops = math.ceil(fleet_cmds / shard_ops)
        shards_mem = math.ceil((n * per_token + usage_bytes) / (a.shard_memory_gib * 2 ** 30))
        shards_mem_tokens = math.ceil(n * per_token / (a.shard_memory_gib * 2 ** 30))
        rows.append({
            "gates": g,
            "rps_per_gate": round(r),
            "hit_ratio": round(model["hit_ratio"], 4),
            "store_reads_per_s_fleet": round(model["reads_per_s"] * g),
            "redis_commands_per_s_fleet": round(fleet_cmds),
            "redis_commands_per_request": round(fleet_cmds / rps, 3),
            "redis_cores_busy": round(fleet_cmds * cmd_us / 1e6, 1),
            "live_entries_per_gate": round(model["live_entries"]),
            "cache_mib_per_gate": round(model["live_entries"] * a.cached_token_bytes / 2 ** 20),
            "shards_for_ops": shards_ops,
            "shards_for_memory_tokens_only": shards_mem_tokens,
            "shards_for_memory_with_usage": shards_mem,
            "event_deliveries_per_change": g,
            "event_bytes_per_change": round(g * deliver_bytes),
            "event_redis_cpu_us_per_change": round(g * deliver_us, 1),
            "probe_deliveries_per_s": probes,
            "probe_redis_cpu_cores": round(probes * deliver_us / 1e6, 3),
            "probe_output_mbit_per_s": round(probes * deliver_bytes * 8 / 1e6, 1),
            "changes_per_s_assumed": a.changes_per_s,
            "change_deliveries_per_s": round(a.changes_per_s * g),
        })
    out["gates_by_cpu"] = gates_by_cpu
    out["redis_cpu_us_per_command"] = round(cmd_us, 3)
    out["shard_ops_per_s"] = round(shard_ops)
    out["by_gates"] = rows

    # 4. Cache memory per gate for a hit ratio (admission keeps the most
    # requested), at each fleet size's per-gate rate.
    targets = []
    for g in sorted(set(a.gates + [gates_by_cpu])):
        r = rps / g
        ceiling = ttl_model(r, n, s, ttl, h)["hit_ratio"]
        need = entries_for(r, n, s, ttl, a.hit_ratios)
        for want in a.hit_ratios:
            entries = need[want]
            row = {"gates": g, "rps_per_gate": round(r), "ttl_ceiling": round(ceiling, 4),
                   "hit_ratio": want, "entries": entries,
                   "cache_mib": round(entries * a.cached_token_bytes / 2 ** 20) if entries else None}
            if entries is None:
                # Beyond what cache.ttl allows: the ttl that would, and the
                # entries it keeps live (room for all).
                lo, hi = ttl, 86400.0 * 30
                if ttl_model(r, n, s, hi, h)["hit_ratio"] >= want:
                    for _ in range(40):
                        mid = (lo + hi) / 2
                        if ttl_model(r, n, s, mid, h)["hit_ratio"] >= want:
                            hi = mid
                        else:
                            lo = mid
                    live = ttl_model(r, n, s, hi, h)["live_entries"]
                    row.update(ttl_needed_s=round(hi), entries_at_that_ttl=round(live),
                               cache_mib_at_that_ttl=round(live * a.cached_token_bytes / 2 ** 20))
            targets.append(row)
    out["cache_for_hit_ratio"] = targets

    # Token-affine routing (every token always to the same gate): each gate
    # holds 1/G of the tokens at their full rates; the fleet is one cache.
    one = ttl_model(rps, n, s, ttl, h)
    out["token_affine"] = {"hit_ratio": round(one["hit_ratio"], 4),
                           "store_reads_per_s_fleet": round(one["reads_per_s"]),
                           "live_entries_fleet": round(one["live_entries"])}

    # The expiry scan (tokens.expiry_scan_interval, 5 min by default): one
    # gate of the fleet at a time reads every token (the chore
    # `expiry-scan`; the other gates read the rows it shares: one GET each
    # per interval), at the rate one gate scanned here at most. Before the
    # chore every gate scanned: that fleet figure is kept beside it.
    scan = m.get("expiry_scan")
    if scan:
        interval = a.expiry_scan_interval_s
        per_gate_tokens_per_s = min(n / interval, scan["tokens_per_s"])
        gets = per_gate_tokens_per_s * scan["gets_per_token"]
        # Redis CPU per command of the scan itself (pipelined GETs).
        scan_cmd_us = scan["redis_cpu_s"] / sum(scan["redis_calls"].values()) * 1e6
        scan_shard_ops = 1e6 / scan_cmd_us * a.shard_util
        out["expiry_scan"] = {
            "measured_tokens_per_s_one_gate": scan["tokens_per_s"],
            "gets_per_token": scan["gets_per_token"],
            "redis_cpu_us_per_command": round(scan_cmd_us, 2),
            "interval_s": interval,
            "scan_takes_s": round(n / scan["tokens_per_s"]),
            "redis_gets_per_s_scanning_gate": round(gets),
            "fleet_one_gate_at_a_time": {
                "redis_gets_per_s": round(gets),
                "redis_cores_busy": round(gets * scan_cmd_us / 1e6, 2),
                "shards_for_ops": math.ceil(gets / scan_shard_ops)},
            "every_gate_scanning_as_before": {
                g: {"redis_gets_per_s": round(gets * g),
                    "redis_cores_busy": round(gets * g * scan_cmd_us / 1e6, 1),
                    "shards_for_ops": math.ceil(gets * g / scan_shard_ops)}
                for g in sorted(set(a.gates + [gates_by_cpu]))},
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--tokens", type=float, default=1e8)
    ap.add_argument("--rps", type=float, default=1e6)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--gates", default="100,1000", help="fleet sizes to show besides the CPU-sized one")
    ap.add_argument("--gate-cores", type=float, default=2, help="cores per gate (default 2)")
    ap.add_argument("--gate-util", type=float, default=0.6, help="target CPU use of a gate (default 0.6)")
    ap.add_argument("--shard-memory-gib", type=float, default=25, help="usable memory per Redis shard (default 25)")
    ap.add_argument("--shard-util", type=float, default=0.5, help="target CPU use of a Redis shard (default 0.5)")
    ap.add_argument("--changes-per-s", type=float, default=100, help="token changes per second, fleet-wide")
    ap.add_argument("--usage-retention-days", type=float, default=90)
    ap.add_argument("--expiry-scan-interval-s", type=float, default=300,
                    help="tokens.expiry_scan_interval (default 300)")
    ap.add_argument("--cached-token-bytes", type=float, default=655,
                    help="memory per cached token (cargo bench --bench cache_memory at bce3d8a; default 655)")
    ap.add_argument("--hit-ratios", default="0.8,0.9,0.95")
    ap.add_argument("--no-sim", action="store_true", help="formulas only")
    ap.add_argument("--json")
    a = ap.parse_args()
    a.gates = [int(g) for g in a.gates.split(",") if g]
    a.hit_ratios = [float(x) for x in a.hit_ratios.split(",") if x]
    results = json.load(open(a.results))
    out = {"check": check(results, not a.no_sim), "fleet": fleet(results, a)}
    json.dump(out, sys.stdout, indent=2)
    print()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
