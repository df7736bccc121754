"""Misses and cold starts (`run.py --misses`; issue 16 item 5; docs/scale.md
uses its results): Zipf traffic over every seeded token, a gate restarted
under load, and what the fleet model needs from Redis. See run.py's
docstring for what is measured.
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from harness import (
    PATH,
    RELEASE,
    cpu_seconds,
    gate_config,
    rss_kib,
    start_gate,
    wait_port,
    wrk,
)

ZIPF_LUA = """
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = "Bearer " .. line end
local n = #tokens
-- Zipf(s) over ranks 1..n (rank k = line k): the cumulative table, then
-- inverse transform by binary search (as examples/load-zipf draws).
local cdf, sum = {}, 0
for k = 1, n do sum = sum + k ^ -%f; cdf[k] = sum end
for k = 1, n do cdf[k] = cdf[k] / sum end
math.randomseed(%d)
local floor, random = math.floor, math.random
request = function()
  local u, lo, hi = random(), 1, n
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if cdf[mid] <= u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", "%s", { ["Authorization"] = tokens[lo] })
end
"""


class Resp:
    """A minimal RESP2 client for the harness's own questions to Redis
    (INFO, MEMORY USAGE, SCAN …): one connection, one command at a time or
    a pipeline."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.sock.sendall(self.encode(args))
        return self.read()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self.read() for _ in commands]

    def info(self, section):
        out = {}
        for line in self.call("INFO", section).decode().splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def close(self):
        self.sock.close()


def commandstats(r):
    """Calls per command since Redis started (the harness's own INFO calls left out)."""
    out = {}
    for k, v in r.info("commandstats").items():
        name = k.removeprefix("cmdstat_")
        if name != "info":
            out[name] = int(v.split(",")[0].split("=")[1])
    return out


def scrape(port):
    """The gate's /metrics: {series with its labels: value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


M_HITS = "hawzu_gate_cache_hits_total"
M_NEG_HITS = "hawzu_gate_cache_negative_hits_total"
M_MISSES = "hawzu_gate_cache_misses_total"
M_ENTRIES = "hawzu_gate_cache_entries"
M_GETS = 'hawzu_gate_store_calls_total{op="get",result="ok"}'
M_FINDS = 'hawzu_gate_store_calls_total{op="find",result="ok"}'
M_DECISIONS = "hawzu_gate_decisions_total"


def delta(after, before, key):
    return after.get(key, 0) - before.get(key, 0)


def lookup_figures(m0, m1, c0, c1, requests):
    """Hit ratio, store reads and Redis commands per request between two
    scrapes of a gate and of Redis's commandstats."""
    hits, misses = delta(m1, m0, M_HITS), delta(m1, m0, M_MISSES)
    lookups = hits + misses + delta(m1, m0, M_NEG_HITS)
    calls = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1}
    calls = {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v}
    total = sum(calls.values())
    return {
        "requests": requests,
        "lookups": int(lookups),
        "hit_ratio": round(hits / lookups, 4) if lookups else None,
        "store_gets": int(delta(m1, m0, M_GETS)),
        "store_gets_per_request": round(delta(m1, m0, M_GETS) / requests, 4) if requests else None,
        "coalesced": int(misses - delta(m1, m0, M_GETS)),
        "store_finds": int(delta(m1, m0, M_FINDS)),
        "redis_commands": total,
        "redis_commands_per_request": round(total / requests, 4) if requests else None,
        "redis_calls_per_request": {k: round(v / requests, 4) for k, v in calls.items()} if requests else {},
        "cache_entries": int(m1.get(M_ENTRIES, 0)),
        "denied": {k.split('code="')[1].split('"')[0]: int(delta(m1, m0, k)) for k in m1
                   if k.startswith(M_DECISIONS) and 'outcome="deny"' in k and delta(m1, m0, k)},
    }


def cpu_per_request(res):
    """CPU microseconds per request of each watched process in a wrk run."""
    return {"cpu_us_per_request": {k: round(v * res["wall_s"] / res["requests"] * 1e6, 2)
                                   for k, v in res["cpu"].items()}}


def misses(procs, tmp, redis, redis_port, prefix, up_port, tokens_file, opts):
    """Item 5: Zipf(s) traffic over every seeded token, against two gates of
    their own with the default cache lifetime (`cache.ttl = 60s`): one with
    the default `cache.max_entries` (1M: room for every token), one with
    `--misses-small-cache` entries. Each is warmed with `--misses-warm`
    seconds of the same traffic (longer than the ttl: the cache reaches its
    steady state), then measured for `--rounds` runs of `--duration`
    seconds; then the first gate is restarted under load (`restart`)."""
    runs = [0]

    def lua():
        """The wrk script, drawing with a new seed each run (the same seed
        would replay the last run's tokens: all hits)."""
        runs[0] += 1
        path = os.path.join(tmp, f"zipf-{runs[0]}.lua")
        with open(path, "w") as f:
            f.write(ZIPF_LUA % (tokens_file, opts.zipf, 42 + runs[0], PATH))
        return path

    # The comparison's gates are done: stopped (their usage writers flush
    # and end), so that neither their writes nor their expiry scans (every
    # 5 min, every token) land in what is measured here.
    procs.stop("gate")
    procs.stop("gate-small")
    r = Resp(redis_port)
    out = {"zipf_s": opts.zipf, "tokens": opts.tokens, "ttl_s": 60, "warm_s": opts.misses_warm, "gates": {}}
    out["expiry_scan"] = expiry_scan(procs, tmp, redis, redis_port, prefix, up_port, r, opts)
    gates = {}
    # The expiry scan off (measured on its own above): what is left is what
    # requests cost.
    no_scan = '[tokens]\nexpiry_scan_interval = "0s"\n'
    for name, entries in (("default", 1_000_000), ("small", opts.misses_small_cache)):
        conf, ports, data = gate_config(tmp, f"miss-{name}", redis_port, prefix, up_port, entries, opts.threads,
                                        extra=no_scan, ttl="60s")
        g, _ = start_gate(procs, f"miss-{name}", conf, ports, data)
        gates[name] = (g, conf, ports, data)
        url = f"http://127.0.0.1:{ports['proxy']}{PATH}"
        watch = [("gate", g.pid), ("redis", redis.pid), ("upstream", procs.items["upstream"].pid)]
        phases = []
        rss0 = rss_kib(g.pid)
        m0, c0 = scrape(ports["ops"]), commandstats(r)
        warm = wrk(url, opts.misses_warm, opts.connections, [], lua(), watch)
        m1, c1 = scrape(ports["ops"]), commandstats(r)
        phases.append(dict(phase="warm", wrk=warm, **lookup_figures(m0, m1, c0, c1, warm["requests"]),
                           **cpu_per_request(warm), gate_rss_kib=rss_kib(g.pid)))
        print(f"misses {name:7s} warm  {warm['rps']:>8.0f} req/s  p99 {warm['p99_ms']:.2f} ms  "
              f"hit ratio {phases[-1]['hit_ratio']}  cpu {warm['cpu']}", file=sys.stderr)
        for i in range(opts.rounds):
            m0, c0 = m1, c1
            res = wrk(url, opts.duration, opts.connections, [], lua(), watch)
            m1, c1 = scrape(ports["ops"]), commandstats(r)
            fig = lookup_figures(m0, m1, c0, c1, res["requests"])
            phases.append(dict(phase=f"round {i + 1}", wrk=res, **fig, **cpu_per_request(res),
                               gate_rss_kib=rss_kib(g.pid)))
            print(f"misses {name:7s} round {i + 1} {res['rps']:>8.0f} req/s  p50 {res['p50_ms']:.2f} ms  "
                  f"p99 {res['p99_ms']:.2f} ms  non-2xx {res['non2xx']}  hit ratio {fig['hit_ratio']}  "
                  f"Redis cmds/req {fig['redis_commands_per_request']}  cpu {res['cpu']}", file=sys.stderr)
        rounds = phases[1:]
        out["gates"][name] = {
            "max_entries": entries,
            "gate_rss_kib_at_start": rss0,
            "phases": phases,
            "median": {
                "rps": round(statistics.median(p["wrk"]["rps"] for p in rounds)),
                "p50_ms": round(statistics.median(p["wrk"]["p50_ms"] for p in rounds), 3),
                "p99_ms": round(statistics.median(p["wrk"]["p99_ms"] for p in rounds), 3),
                "hit_ratio": statistics.median(p["hit_ratio"] for p in rounds),
                "store_gets_per_request": statistics.median(p["store_gets_per_request"] for p in rounds),
                "redis_commands_per_request": statistics.median(p["redis_commands_per_request"] for p in rounds),
                "non2xx": sum(p["wrk"]["non2xx"] for p in rounds),
                "cpu_us_per_request": {k: round(statistics.median(p["cpu_us_per_request"][k] for p in rounds), 2)
                                       for k in rounds[0]["cpu_us_per_request"]},
                "cpu": {k: round(statistics.median(p["wrk"]["cpu"][k] for p in rounds), 2)
                        for k in rounds[0]["wrk"]["cpu"]},
            },
        }
        if name == "small":
            procs.stop(f"miss-{name}")
    g, conf, ports, data = gates["default"]
    out["restart"] = restart(procs, "miss-default", g, conf, ports, redis_port, redis, tokens_file, opts)
    procs.stop("miss-default")
    out["redis_memory"] = redis_memory(r, prefix, opts)
    out["fanout"] = fanout(redis_port, redis.pid, prefix, opts.fanout)
    out["redis_benchmark"] = redis_benchmark(redis_port, redis.pid)
    r.close()
    return out


def expiry_scan(procs, tmp, redis, redis_port, prefix, up_port, r, opts):
    """One gate's expiry scan as shipped (`tokens.expiry_scan_interval`
    5m: the first at start) over every seeded token, with nothing else
    running: how long, which Redis commands, whose CPU. Done when Redis's
    ZREVRANGEBYSCORE count has not moved for 2 s."""
    conf, ports, data = gate_config(tmp, "scan", redis_port, prefix, up_port, 1000, opts.threads)
    c0, redis0 = commandstats(r), cpu_seconds(redis.pid)
    t0 = time.time()
    g, _ = start_gate(procs, "scan", conf, ports, data)
    last, last_change = 0, time.time()
    while True:
        n = commandstats(r).get("zrevrangebyscore", 0) - c0.get("zrevrangebyscore", 0)
        if n != last:
            last, last_change = n, time.time()
        elif n and time.time() - last_change > 2:
            break
        if time.time() - t0 > 1800:
            sys.exit("expiry scan: not done in 30 min")
        time.sleep(0.2)
    c1 = commandstats(r)
    gate_cpu = cpu_seconds(g.pid)
    procs.stop("scan")
    calls = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1 if c1.get(k, 0) - c0.get(k, 0)}
    seconds = last_change - t0
    return {"tokens": opts.tokens, "seconds": round(seconds, 2), "redis_calls": calls,
            "gets_per_token": round(calls.get("get", 0) / opts.tokens, 3),
            "tokens_per_s": round(opts.tokens / seconds), "redis_cpu_s": round(cpu_seconds(redis.pid) - redis0, 2),
            "gate_cpu_s": round(gate_cpu, 2)}


def restart(procs, name, gate, conf, ports, redis_port, redis, tokens_file, opts):
    """The gate killed (SIGTERM) and started again on the same ports while
    examples/load-zipf keeps sending: per 500 ms window the client's p99,
    refusals and errors, the distinct tokens answered by the new gate, and
    (scraped every 500 ms) the gate's store reads and Redis's GET calls."""
    url = f"http://127.0.0.1:{ports['proxy']}{PATH}"
    seconds = opts.restart_warm + opts.restart_after + 15  # + the gate's down time
    gen = subprocess.Popen([os.path.join(RELEASE, "examples", "load-zipf"), url, tokens_file,
                            "--connections", str(opts.connections), "--seconds", str(seconds),
                            "--zipf", str(opts.zipf), "--seed", "7"], stdout=subprocess.PIPE, text=True)
    samples = []
    stop = threading.Event()
    sampler_redis = Resp(redis_port)

    def sample():
        while not stop.is_set():
            t = time.time()
            try:
                m = scrape(ports["ops"])
            except OSError:
                m = None
            samples.append({"t": t, "gate": m, "redis": commandstats(sampler_redis),
                            "redis_cpu": cpu_seconds(redis.pid)})
            stop.wait(max(0.0, 0.5 - (time.time() - t)))

    # The client loads the tokens first: start the clock on its first requests.
    base = scrape(ports["ops"]).get(M_HITS, 0)
    deadline = time.time() + 60
    while scrape(ports["ops"]).get(M_HITS, 0) == base:
        if time.time() > deadline:
            sys.exit("restart: the client sent nothing")
        time.sleep(0.05)
    sampler = threading.Thread(target=sample)
    sampler.start()
    time.sleep(opts.restart_warm)
    t_kill = time.time()
    gate.send_signal(signal.SIGTERM)
    gate.wait(60)
    t_exited = time.time()
    gen.send_signal(signal.SIGUSR1)  # the mark: every later connection is the new gate's
    time.sleep(0.05)
    procs.start(name, [os.path.join(RELEASE, "hawzu-gate"), "serve", "--config", conf], cwd=os.path.dirname(conf))
    wait_port(ports["proxy"], name)
    t_listening = time.time()
    for port in ports.values():
        wait_port(port, name)
    out_text, _ = gen.communicate(timeout=seconds + 60)
    stop.set()
    sampler.join()
    sampler_redis.close()
    final = scrape(ports["ops"])
    windows = [json.loads(line) for line in out_text.splitlines() if line.strip()]
    for w in windows:
        w["t"] = w["unix_ms"] / 1000
    win = 0.5
    # Normal: the windows before the kill, the client's first 2 s (connecting) left out.
    before = [w for w in windows if w["t"] + win <= t_kill and w["t"] >= windows[0]["t"] + 2]
    normal_p99 = statistics.median(w["p99_us"] for w in before) / 1000
    after = [w for w in windows if w["t"] >= t_listening - win and w["answered"]]
    bound = 1.5 * normal_p99
    recovered_at = None
    for i, w in enumerate(after):
        run = after[i:i + 4]
        if len(run) == 4 and all(x["p99_us"] / 1000 <= bound for x in run):
            # The end of the first window of four in a row within the bound.
            recovered_at = w["t"] + win
            break
    new_samples = [s for s in samples if s["t"] >= t_listening and s["gate"]]
    rates = []
    for a, b in zip(new_samples, new_samples[1:]):
        dt = b["t"] - a["t"]
        rates.append({"t_after_listen_s": round(b["t"] - t_listening, 2),
                      "store_gets_per_s": round(delta(b["gate"], a["gate"], M_GETS) / dt),
                      "redis_gets_per_s": round((b["redis"].get("get", 0) - a["redis"].get("get", 0)) / dt),
                      "gate_requests_per_s": round((delta(b["gate"], a["gate"], M_HITS) + delta(b["gate"], a["gate"], M_MISSES)) / dt)})
    sum_errors = lambda key: {k: sum(w[key][k] for w in windows) for k in ("connect", "io", "timeout")}
    distinct = windows[-1]["distinct_after_mark"] if windows else 0
    reads = int(final.get(M_GETS, 0))
    timeline = [{"t_s": round(w["t"] - t_kill, 2), "answered": w["answered"], "p99_ms": w["p99_us"] / 1000,
                 "refused": w["refused"], "non2xx": w["non2xx"], "distinct_after_mark": w["distinct_after_mark"]}
                for w in windows]
    return {
        "connections": opts.connections,
        "window_s": win,
        "shutdown_s": round(t_exited - t_kill, 3),
        "down_s": round(t_listening - t_kill, 3),
        "normal_p99_ms": round(normal_p99, 3),
        "normal_p99_windows": len(before),
        "recovered_bound_ms": round(bound, 3),
        "p99_back_to_normal_after_listen_s": round(max(0.0, recovered_at - t_listening), 2) if recovered_at else None,
        "max_p99_after_listen_ms": max((w["p99_us"] for w in after), default=0) / 1000,
        "p99_ms_first_windows_after_listen": [w["p99_us"] / 1000 for w in after[:10]],
        "denied_by_new_gate": {k.split('code="')[1].split('"')[0]: int(v) for k, v in final.items()
                               if k.startswith(M_DECISIONS) and 'outcome="deny"' in k and v},
        "new_gate": {
            "requests_answered": sum(w["answered_after_mark"] for w in windows),
            "distinct_tokens_answered": distinct,
            "store_gets": reads,
            "store_finds": int(final.get(M_FINDS, 0)),
            "misses": int(final.get(M_MISSES, 0)),
            "coalesced": int(final.get(M_MISSES, 0) - reads),
            "reads_le_distinct": reads <= distinct,
            "peak_store_gets_per_s": max((x["store_gets_per_s"] for x in rates), default=0),
            "peak_redis_gets_per_s": max((x["redis_gets_per_s"] for x in rates), default=0),
        },
        "refused_while_down": sum(w["refused"] for w in windows),
        "errors_at_shutdown": sum_errors("errors_before_mark"),
        "errors_after_listen": sum_errors("errors_after_mark"),
        "non2xx": sum(w["non2xx"] for w in windows),
        "read_rate": rates,
        "timeline": timeline,
    }


KINDS = ("token:", "id:", "ws:", "all", "usage:", "usage-day:", "usage-clients:", "usage-refusal:", "audit",
         "notice:", "events")


def redis_memory(r, prefix, opts, sample=2000):
    """What a token costs Redis: every key under the prefix counted by kind
    (one SCAN), `MEMORY USAGE … SAMPLES 0` (exact) of up to `sample` keys of
    each kind, the sorted-set indexes' share per member, and what an expiry
    adds (the expires dict is not in MEMORY USAGE: `used_memory` around
    `PEXPIREAT` on the sampled token keys, then `PERSIST`)."""
    counts = {k: 0 for k in KINDS}
    samples = {k: [] for k in KINDS}
    cursor = b"0"
    while True:
        cursor, batch = r.call("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 10000)
        for key in batch:
            rest = key[len(prefix):].decode()
            kind = next((k for k in KINDS if rest.startswith(k)), "other")
            counts[kind] = counts.get(kind, 0) + 1
            if len(samples.setdefault(kind, [])) < sample:
                samples[kind].append(key)
        if cursor == b"0":
            break
    out = {"keys": {k: v for k, v in counts.items() if v}, "bytes_per_key": {}}
    for kind, keys in samples.items():
        if keys:
            sizes = r.pipeline([("MEMORY", "USAGE", k, "SAMPLES", "0") for k in keys])
            out["bytes_per_key"][kind] = round(statistics.mean(sizes), 1)
    for kind in ("ws:", "all"):
        for key in samples.get(kind, []):
            members = r.call("ZCARD", key)
            if members >= 1000:  # a skiplist, not a listpack
                out[f"bytes_per_member_{kind.rstrip(':')}"] = round(
                    r.call("MEMORY", "USAGE", key, "SAMPLES", "0") / members, 1)
                out[f"members_{kind.rstrip(':')}"] = members
                break
    tokens = samples["token:"]
    values = r.pipeline([("GET", k) for k in tokens])
    used = [v for v in values if v and b'"last_used_at"' in v]
    out["record_json_bytes"] = round(statistics.mean(len(v) for v in values if v), 1)
    if used:
        out["record_json_bytes_with_last_used"] = round(statistics.mean(len(v) for v in used), 1)
        used_keys = [k for k, v in zip(tokens, values) if v and b'"last_used_at"' in v]
        out["bytes_per_key_token_with_last_used"] = round(statistics.mean(
            r.pipeline([("MEMORY", "USAGE", k, "SAMPLES", "0") for k in used_keys])), 1)
    before = int(r.info("memory")["used_memory"])
    far = int(time.time() * 1000) + 10 * 365 * 86400 * 1000
    r.pipeline([("PEXPIREAT", k, far) for k in tokens])
    after = int(r.info("memory")["used_memory"])
    r.pipeline([("PERSIST", k) for k in tokens])
    out["expiry_bytes_per_key"] = round((after - before) / len(tokens), 1)
    mem = r.info("memory")
    out["used_memory"] = int(mem["used_memory"])
    out["used_memory_dataset"] = int(mem.get("used_memory_dataset", 0))
    out["mem_allocator"] = mem.get("mem_allocator")
    return out


def fanout(redis_port, redis_pid, prefix, sizes):
    """What one event costs Redis per subscribed gate: K RESP3 subscribers
    on a channel named as long as the events channel, invalidations of the
    real size published (pipelined) until about 2M deliveries, Redis's CPU
    and output bytes per delivered message."""
    import resource
    import selectors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    channel = prefix + "evfan1"  # as long as prefix + "events": the same message size
    payload = '{"op":"invalidate","hash":"' + "ab" * 32 + '"}'
    out = {"payload_bytes": len(payload), "channel_bytes": len(channel), "by_subscribers": {}}
    r = Resp(redis_port)
    for k in sizes:
        k = min(k, hard - 100)
        subs = []
        for _ in range(k):
            s = socket.create_connection(("127.0.0.1", redis_port))
            s.sendall(Resp.encode(["HELLO", "3"]) + Resp.encode(["SUBSCRIBE", channel]))
            s.setblocking(False)
            subs.append(s)
        deadline = time.time() + 30
        while r.call("PUBSUB", "NUMSUB", channel)[1] < k:
            if time.time() > deadline:
                sys.exit("fanout: the subscribers did not subscribe")
            time.sleep(0.05)
        received = [0]
        done = threading.Event()

        def drain():
            sel = selectors.DefaultSelector()
            for s in subs:
                sel.register(s, selectors.EVENT_READ)
            idle_since = None
            while True:
                events = sel.select(0.1)
                if not events:
                    if done.is_set():
                        idle_since = idle_since or time.time()
                        if time.time() - idle_since > 0.5:
                            break
                    continue
                idle_since = None
                for key, _ in events:
                    try:
                        received[0] += len(key.fileobj.recv(1 << 20))
                    except BlockingIOError:
                        pass
            sel.close()

        reader = threading.Thread(target=drain)
        reader.start()
        time.sleep(0.5)  # the HELLO and SUBSCRIBE replies are read
        messages = max(1, 2_000_000 // k)
        net0 = int(r.info("stats")["total_net_output_bytes"])
        cpu0 = cpu_seconds(redis_pid)
        t0 = time.time()
        delivered = 0
        for start in range(0, messages, 1000):
            n = min(1000, messages - start)
            delivered += sum(r.pipeline([("PUBLISH", channel, payload)] * n))
        published = time.time() - t0
        done.set()
        reader.join()
        cpu = cpu_seconds(redis_pid) - cpu0
        net = int(r.info("stats")["total_net_output_bytes"]) - net0
        for s in subs:
            s.close()
        out["by_subscribers"][k] = {
            "messages": messages,
            "deliveries": delivered,
            "publish_s": round(published, 2),
            "redis_cpu_s": round(cpu, 2),
            "redis_cpu_us_per_delivery": round(cpu / delivered * 1e6, 3),
            "output_bytes_per_delivery": round(net / delivered, 1),
            "deliveries_per_s": round(delivered / published),
        }
        print(f"fanout {k} subscribers: {json.dumps(out['by_subscribers'][k])}", file=sys.stderr)
    r.close()
    return out


def redis_benchmark(redis_port, redis_pid):
    """redis-benchmark against the same private server (GET and SET of
    random keys in db 9, 50 clients, without and with pipelining): the
    commands a shard takes here, and Redis's CPU per command."""
    out = {}
    for pipeline in (1, 16):
        cpu0 = cpu_seconds(redis_pid)
        t0 = time.time()
        p = subprocess.run(["redis-benchmark", "-p", str(redis_port), "--dbnum", "9", "-t", "get,set",
                            "-n", "1000000", "-r", "1000000", "-c", "50", "-P", str(pipeline), "-q", "--csv"],
                           capture_output=True, text=True)
        wall = time.time() - t0
        cpu = cpu_seconds(redis_pid) - cpu0
        rows = {}
        for line in p.stdout.splitlines():
            cells = [c.strip('"') for c in line.split(",")]
            if len(cells) > 1 and cells[0] in ("GET", "SET"):
                rows[cells[0].lower() + "_per_s"] = round(float(cells[1]))
        rows["redis_cpu_us_per_command"] = round(cpu / 2_000_000 * 1e6, 3)
        rows["wall_s"] = round(wall, 1)
        out[f"pipeline_{pipeline}"] = rows
    return out


def print_misses(m, seed):
    print(f"\nmisses: Zipf s = {m['zipf_s']} over {m['tokens']} tokens, cache.ttl {m['ttl_s']} s, "
          f"{m['warm_s']} s warm-up, medians of the rounds")
    print("| cache.max_entries | req/s | p50 ms | p99 ms | non-2xx | hit ratio | store reads/req "
          "| Redis cmds/req | CPU (cores) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for g in m["gates"].values():
        s = g["median"]
        cpu = ", ".join(f"{k} {v}" for k, v in s["cpu"].items())
        print(f"| {g['max_entries']} | {s['rps']} | {s['p50_ms']} | {s['p99_ms']} | {s['non2xx']} | {s['hit_ratio']} "
              f"| {s['store_gets_per_request']} | {s['redis_commands_per_request']} | {cpu} |")
    for name, g in m["gates"].items():
        last = g["phases"][-1]
        print(f"- {name}: Redis calls per request (last round): {json.dumps(last['redis_calls_per_request'])}")
    r = m["restart"]
    ng = r["new_gate"]
    print(f"\nrestart under load ({r['connections']} connections): down {r['down_s']} s "
          f"(shutdown {r['shutdown_s']} s); normal p99 {r['normal_p99_ms']} ms; "
          f"p99 back under {r['recovered_bound_ms']} ms {r['p99_back_to_normal_after_listen_s']} s after "
          f"listening (worst window {r['max_p99_after_listen_ms']} ms)")
    print(f"- new gate: {ng['requests_answered']} answered, {ng['distinct_tokens_answered']} distinct tokens, "
          f"{ng['store_gets']} store reads (reads <= distinct: {ng['reads_le_distinct']}), "
          f"{ng['coalesced']} coalesced, peak {ng['peak_store_gets_per_s']} reads/s "
          f"(Redis GETs peak {ng['peak_redis_gets_per_s']}/s, the usage writer's included)")
    print(f"- refused while down: {r['refused_while_down']}; errors at the old gate's shutdown: "
          f"{r['errors_at_shutdown']}; errors after listening: {r['errors_after_listen']}; non-2xx: {r['non2xx']}")
    sc = m["expiry_scan"]
    print(f"\nexpiry scan (one gate, as shipped, at start): {sc['tokens']} tokens in {sc['seconds']} s "
          f"({sc['tokens_per_s']} tokens/s), {sc['gets_per_token']} GETs per token, Redis CPU {sc['redis_cpu_s']} s, "
          f"gate CPU {sc['gate_cpu_s']} s; {json.dumps(sc['redis_calls'])}")
    mem = m["redis_memory"]
    print(f"\nRedis memory: {json.dumps(mem['bytes_per_key'])} bytes per key; keys {json.dumps(mem['keys'])}; "
          f"zset bytes per member: ws {mem.get('bytes_per_member_ws')}, all {mem.get('bytes_per_member_all')}; "
          f"expiry +{mem['expiry_bytes_per_key']} B; seed used_memory per token {seed and seed['used_memory_bytes_per_token']}")
    for k, f in m["fanout"]["by_subscribers"].items():
        print(f"- fan-out, {k} subscribers: {f['redis_cpu_us_per_delivery']} µs Redis CPU and "
              f"{f['output_bytes_per_delivery']} B per delivery, {f['deliveries_per_s']} deliveries/s")
    print(f"- redis-benchmark: {json.dumps(m['redis_benchmark'])}")
