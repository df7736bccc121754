#!/usr/bin/env python3
"""What the audit log's index by workspace costs and buys, on Redis.

Loads N audit events into a private redis-server's stream the way a gate
of an earlier version wrote them (no index; `--workspaces` workspaces,
one chosen at random per event), starts the gate (release build) on it,
and measures:

- the indexing pass a gate runs at start: how long until every event is
  indexed (the pass's marker reaches the stream's last id), and the gate's
  CPU for it;
- Redis memory: the stream, and all the workspaces' indexes together
  (`MEMORY USAGE`), per event;
- a tenant's read: the calls and time to page through one workspace's
  whole history by `GET /admin/v1/audit?workspace=` (its index), against
  the calls a scan of the shared log needs (one per 5,000 events).

    python3 benches/load/audit_index.py --events 1000000 --json audit-index.json

Needs redis-server and redis-cli; builds nothing (`cargo build --release
--bin hawzu-gate` first).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Procs, admin_call, cpu_seconds, free_port, gate_config, start_gate, start_redis, write_json  # noqa: E402

PREFIX = "bench-idx:"
MAX_SCAN = 5000


def resp(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out += [f"${len(b)}\r\n".encode(), b, b"\r\n"]
    return b"".join(out)


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *map(str, args)], capture_output=True, text=True,
                          check=True).stdout.strip()


def load_events(port, n, workspaces, seed):
    """N create events as an earlier gate wrote them: the stream only."""
    rnd = random.Random(seed)
    event = {"time": "2026-12-07T00:00:00Z", "action": "create", "actor": "admin",
             "token_id": "tok_AAAAAAAAAAAAAAAA", "workspace_id": "", "scope": {"type": "workspace",
             "role": "workspace_viewer"}, "before": {}, "after": {"name": "bench", "workspace": ""},
             "client": "127.0.0.1", "request_id": "hg-bench"}
    per = {}
    batch = []
    for i in range(n):
        ws = f"ws_{rnd.randrange(workspaces)}"
        per[ws] = per.get(ws, 0) + 1
        event["workspace_id"] = event["after"]["workspace"] = ws
        batch.append(resp("XADD", f"{PREFIX}audit", "*", "event", json.dumps(event, separators=(",", ":"))))
        if len(batch) == 100_000 or i == n - 1:
            p = subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=b"".join(batch),
                               capture_output=True, check=True)
            if b"errors: 0" not in p.stdout:
                sys.exit(f"loading events: {p.stdout.decode()}")
            batch = []
    return per


def memory(port, pattern):
    """Bytes of every key matching `pattern` (`MEMORY USAGE … SAMPLES 0`), and how many keys."""
    total, keys, cursor = 0, 0, "0"
    while True:
        out = cli(port, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000).splitlines()
        cursor, found = out[0], out[1:]
        for k in found:
            total += int(cli(port, "MEMORY", "USAGE", k, "SAMPLES", 0))
            keys += 1
        if cursor == "0":
            return total, keys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--workspaces", type=int, default=1000)
    ap.add_argument("--json")
    args = ap.parse_args()
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _, redis_port = start_redis(procs)
            t = time.monotonic()
            per = load_events(redis_port, args.events, args.workspaces, 7)
            loaded = time.monotonic() - t
            last = cli(redis_port, "XREVRANGE", f"{PREFIX}audit", "+", "-", "COUNT", 1).splitlines()[0]
            marker = f"{PREFIX}audit-indexed{{{PREFIX}audit}}"
            conf, ports, data = gate_config(tmp, "gate", redis_port, PREFIX, free_port(), 1000, 1,
                                            extra=f"[audit]\nmax_events = {args.events}\n")
            t = time.monotonic()
            gate, key = start_gate(procs, "gate", conf, ports, data)
            cpu0 = cpu_seconds(gate.pid)
            while cli(redis_port, "GET", marker) != last:
                if time.monotonic() - t > 600:
                    sys.exit("the pass did not finish within 10 minutes")
                time.sleep(0.05)
            indexed = time.monotonic() - t
            pass_cpu = cpu_seconds(gate.pid) - cpu0
            stream_bytes, _ = memory(redis_port, f"{PREFIX}audit")
            index_bytes, index_keys = memory(redis_port, f"{PREFIX}audit-ws:*")
            # One workspace's whole history, page by page (500 a page).
            ws, count = max(per.items(), key=lambda kv: kv[1])
            calls, seen, cursor = 0, 0, None
            t = time.monotonic()
            while True:
                path = f"/admin/v1/audit?workspace={ws}&limit=500" + (f"&cursor={cursor}" if cursor else "")
                page = admin_call(ports["admin"], key, "GET", path)
                calls += 1
                seen += len(page["events"])
                cursor = page["next_cursor"]
                if not cursor:
                    break
            read = time.monotonic() - t
            assert seen == count, (seen, count)
            results = {
                "events": args.events, "workspaces": args.workspaces, "load_s": round(loaded, 1),
                "index_pass_s": round(indexed, 2), "index_pass_cpu_s": round(pass_cpu, 2),
                "stream_bytes": stream_bytes, "stream_bytes_per_event": round(stream_bytes / args.events, 1),
                "index_keys": index_keys, "index_bytes": index_bytes,
                "index_bytes_per_event": round(index_bytes / args.events, 1),
                "tenant": {"workspace": ws, "events": count, "calls": calls, "seconds": round(read, 3),
                           "shared_log_scan_calls_at_least": -(-args.events // MAX_SCAN)},
            }
            print(json.dumps(results, indent=2))
            write_json(args.json, results)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
