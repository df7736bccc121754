#!/usr/bin/env python3
"""What the fleet-wide scans cost a Redis shared by G gates.

Seeds N tokens into a private redis-server (`load-seed`, the admin API's
own `TokenStore::create`), then for each gate count G starts G gates on
it with `tokens.expiry_scan_interval` = `--interval` and no traffic, lets
them run one interval, and measures over `--window` seconds: Redis `GET`s
and all commands per second (`INFO commandstats`, the harness's own
`INFO` left out), and the gates' CPU. With the scan a fleet chore, the
`GET` rate should not grow with G; give `--bin-dir` of an older build to
measure the gates that each scanned.

    python3 benches/load/fleet_chores.py --gates 1,3 --json chores.json
    python3 benches/load/fleet_chores.py --gates 3 --bin-dir OLD/target/release --label before

Needs redis-server and redis-cli; builds nothing (`cargo build --release
--bin hawzu-gate --example load-seed` first; the seeder is taken from
`--seed-dir`, this tree's release build by default).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import RELEASE, Procs, cpu_seconds, free_port, gate_config, start_gate, start_redis, write_json  # noqa: E402

PREFIX = "bench-chores:"


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *map(str, args)], capture_output=True, text=True,
                          check=True).stdout.strip()


def commandstats(port):
    """calls per command, from `INFO commandstats`."""
    calls = {}
    for line in cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            fields = dict(kv.split("=") for kv in rest.split(","))
            calls[name] = int(fields["calls"])
    return calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--gates", default="1,3", help="gate counts, comma-separated")
    ap.add_argument("--interval", type=int, default=10, help="tokens.expiry_scan_interval, s")
    ap.add_argument("--window", type=int, default=30, help="measured seconds per gate count")
    ap.add_argument("--bin-dir", default=RELEASE, help="where hawzu-gate is")
    ap.add_argument("--seed-dir", default=os.path.join(RELEASE, "examples"), help="where load-seed is")
    ap.add_argument("--label", default="")
    ap.add_argument("--json")
    args = ap.parse_args()
    procs = Procs()
    results = {"tokens": args.tokens, "interval_s": args.interval, "window_s": args.window,
               "bin_dir": args.bin_dir, "label": args.label, "by_gates": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _, redis_port = start_redis(procs)
            t = time.monotonic()
            subprocess.run([os.path.join(args.seed_dir, "load-seed"), f"redis://127.0.0.1:{redis_port}", PREFIX,
                            str(args.tokens)], stdout=subprocess.DEVNULL, check=True)
            results["seed_s"] = round(time.monotonic() - t, 1)
            upstream = free_port()
            for g in [int(x) for x in args.gates.split(",")]:
                for k in cli(redis_port, "KEYS", f"{PREFIX}chore*").split():
                    cli(redis_port, "DEL", k)
                gates = []
                for i in range(g):
                    conf, ports, data = gate_config(
                        tmp, f"g{g}-{i}", redis_port, PREFIX, upstream, 1000, 1,
                        extra=f'[tokens]\nexpiry_scan_interval = "{args.interval}s"\n')
                    gates.append(start_gate(procs, f"g{g}-{i}", conf, ports, data, bin_dir=args.bin_dir)[0])
                # Past the first round of each gate and its start-up work.
                time.sleep(args.interval + 2)
                before, cpu0, t0 = commandstats(redis_port), [cpu_seconds(p.pid) for p in gates], time.monotonic()
                time.sleep(args.window)
                after, cpu1, t1 = commandstats(redis_port), [cpu_seconds(p.pid) for p in gates], time.monotonic()
                secs = t1 - t0
                delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                delta["info"] = 0
                results["by_gates"][g] = {
                    "redis_gets_per_s": round(delta.get("get", 0) / secs),
                    "redis_commands_per_s": round(sum(delta.values()) / secs),
                    "gates_cpu_s_per_s": round((sum(cpu1) - sum(cpu0)) / secs, 3),
                    "cpu_s_per_s_by_gate": [round((b - a) / secs, 3) for a, b in zip(cpu0, cpu1)],
                    "top_commands": dict(sorted(((k, round(v / secs)) for k, v in delta.items() if v),
                                                key=lambda kv: -kv[1])[:6]),
                }
                print(g, json.dumps(results["by_gates"][g]), flush=True)
                for i in range(g):
                    procs.stop(f"g{g}-{i}")
            print(json.dumps(results, indent=2))
            write_json(args.json, results)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
