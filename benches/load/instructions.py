#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: the server's own
(user-space) work per request, the same from run to run whatever else the
machine is doing — where `run.py`'s req/s moves by 10 % between rounds of
identical builds and `profile.py`'s samples by a few percent.

    python3 benches/load/instructions.py [--no-build] [--cases adeh]
        [--alt DIR] [--requests-for 6] [--repeat 2] [--json F] [--keep DIR]

Each case's server runs under `valgrind --tool=callgrind` with
instrumentation off while it starts and warms up (its pools, the token
cache); then `callgrind_control` turns counting on and zeroes it, wrk (1
thread, 50 connections) drives it for `--requests-for` seconds, and a dump
gives the instructions the process executed meanwhile (every thread; the
kernel's work is not counted: that is `profile.py`'s). Divided by the
requests wrk completed: instructions per request.

  a  the upstream alone (hyper answering 200)
  d  the gate's proxy, one valid token (cache hit)
  e  the gate's /auth/nginx alone
  v  the gate's /envoy door alone (Envoy's HTTP ext_authz check, as Envoy
     sends it: the original method and path under /envoy, the token)
  h  the bare hyper proxy (the gate's HTTP stack, no authorization)

With `--alt DIR` (a directory holding another build's `hawzu-gate` and
`examples/load-bare-proxy`), cases d, e and h are counted for that build too
(as D, E, H; and v as V): a change's cost or saving in instructions, without the noise
of a throughput run. `--repeat N` counts each case N times (a fresh server
each time) to show how repeatable the count is. The top functions of each
case (inclusive of nothing: self cost) are kept in the JSON.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (the load harness's shared parts)

VALGRIND = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no", "--compress-strings=no"]


def callgrind_control(pid, *args):
    r = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        sys.exit(f"callgrind_control {' '.join(args)} {pid} failed: {r.stderr.strip() or r.stdout.strip()}")


def dumped_total(out_prefix):
    """The `summary`/`totals` Ir of every dump file written under the
    prefix since it was last cleared (one per thread if --separate-threads,
    one in all otherwise)."""
    total = 0
    found = False
    directory, base = os.path.split(out_prefix)
    for name in os.listdir(directory):
        if not name.startswith(base):
            continue
        with open(os.path.join(directory, name)) as f:
            for line in f:
                m = re.match(r"(?:summary|totals):\s+(\d+)", line)
                if m:
                    total += int(m.group(1))
                    found = True
                    break
    if not found:
        sys.exit(f"no callgrind dump under {out_prefix}")
    return total


def top_functions(out_prefix, requests, n=40):
    """Self instructions per request of the costliest functions, from
    callgrind_annotate."""
    directory, base = os.path.split(out_prefix)
    files = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.startswith(base))
    rows = []
    for path in files:
        r = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                           capture_output=True, text=True)
        for line in r.stdout.splitlines():
            m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$", line)
            if m and "PROGRAM TOTALS" not in line:
                rows.append((int(m.group(1).replace(",", "")), m.group(2).strip()))
    rows.sort(reverse=True)
    return [[round(ir / requests, 1), fn] for ir, fn in rows[:n]]


def count(name, args, port, url, headers, seconds, connections, tmp, keep=None):
    """Starts `args` under callgrind, warms it, counts `seconds` of load."""
    out = os.path.join(tmp, f"cg-{name}-{time.monotonic_ns()}")
    os.makedirs(out)
    prefix = os.path.join(out, "callgrind.out")
    procs = harness.Procs()
    try:
        p = procs.start(name, VALGRIND + [f"--callgrind-out-file={prefix}"] + args[0], cwd=args[1])
        harness.wait_port(port, name, timeout=120)
        hdrs = list(headers)
        # Warm-up, uninstrumented: connections, the upstream pool, the cache.
        harness.wrk(url, 2, connections, hdrs)
        callgrind_control(p.pid, "-i", "on")
        harness.wrk(url, 1, connections, hdrs)
        callgrind_control(p.pid, "-z")
        res = harness.wrk(url, seconds, connections, hdrs)
        callgrind_control(p.pid, "-d")
        # Anything dumped before the zeroing is gone; only this dump counts.
        total = dumped_total(prefix)
        requests = res["requests"]
        if res["non2xx"] or res["socket_errors"]:
            sys.exit(f"{name}: {res['non2xx']} non-2xx answers, socket errors {res['socket_errors']!r}")
        return {
            "requests": requests,
            "instructions": total,
            "per_request": round(total / requests),
            "top": top_functions(prefix, requests),
        }
    finally:
        procs.stop_all()
        if keep:
            os.makedirs(keep, exist_ok=True)
            for f in os.listdir(out):
                shutil.copy(os.path.join(out, f), os.path.join(keep, f"{name}-{f}"))
        shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="adeh")
    ap.add_argument("--alt", help="a directory with another build's hawzu-gate and examples/load-bare-proxy")
    ap.add_argument("--requests-for", type=int, default=6, help="seconds of counted load per case")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--keep", help="a directory to keep the callgrind dumps in (callgrind_annotate reads them)")
    ap.add_argument("--no-build", action="store_true")
    opts = ap.parse_args()
    for tool in ("wrk", "valgrind", "callgrind_control", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed: apt-get install wrk valgrind redis-server")
    if not opts.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "hawzu-gate", "--example", "load-upstream",
                        "--example", "load-bare-proxy"], cwd=harness.ROOT, check=True)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=harness.ROOT, capture_output=True,
                            text=True).stdout.strip()
    builds = {"": harness.RELEASE}
    if opts.alt:
        builds["alt"] = os.path.abspath(opts.alt)
    procs = harness.Procs()
    tmp = tempfile.mkdtemp(prefix="hawzu-instructions-")
    results = {"commit": commit, "alt": opts.alt, "seconds": opts.requests_for, "connections": opts.connections,
               "threads": opts.threads, "cases": {}}
    try:
        _, redis_port = harness.start_redis(procs)
        _, up_port = harness.start_upstream(procs, opts.threads)
        # One token, made by a native gate on the same Redis and key prefix
        # as every counted gate (a counted gate reads it at its first miss).
        prefix = f"instructions:{int(time.time())}:"
        conf, ports, data = harness.gate_config(tmp, "seed", redis_port, prefix, up_port, 1000, 1)
        _, key = harness.start_gate(procs, "seed", conf, ports, data)
        auth = harness.create_token(ports["admin"], key, "instructions")
        procs.stop("seed")

        def plan(letter, bin_dir):
            if letter == "a":
                port = harness.free_port()
                return ("upstream alone",
                        [os.path.join(harness.RELEASE, "examples", "load-upstream"), f"127.0.0.1:{port}",
                         str(opts.threads)], port, "", [], tmp)
            if letter in "dev":
                n = f"gate-{letter}-{time.monotonic_ns()}"
                conf, ports, data = harness.gate_config(tmp, n, redis_port, prefix, up_port, 1000, opts.threads)
                if letter == "d":
                    return ("gate proxy, cache hit", [os.path.join(bin_dir, "hawzu-gate"), "serve", "--config", conf],
                            ports["proxy"], harness.PATH, [auth], os.path.dirname(conf))
                if letter == "v":
                    return ("gate /envoy alone", [os.path.join(bin_dir, "hawzu-gate"), "serve", "--config", conf],
                            ports["auth"], "/envoy" + harness.PATH, [auth], os.path.dirname(conf))
                return ("gate /auth/nginx alone", [os.path.join(bin_dir, "hawzu-gate"), "serve", "--config", conf],
                        ports["auth"], "/auth/nginx",
                        [auth, "X-Original-Method: GET", f"X-Original-URI: {harness.PATH}"], os.path.dirname(conf))
            port = harness.free_port()
            return ("bare hyper proxy",
                    [os.path.join(bin_dir, "examples", "load-bare-proxy"), f"127.0.0.1:{port}",
                     f"127.0.0.1:{up_port}", str(opts.threads)], port, harness.PATH, [], tmp)

        for build, bin_dir in builds.items():
            for letter in opts.cases:
                if build and letter == "a":
                    continue
                label = letter.upper() if build else letter
                runs = []
                for _ in range(opts.repeat):
                    name, args, port, path, headers, cwd = plan(letter, bin_dir)
                    res = count(label, (args, cwd), port, f"http://127.0.0.1:{port}{path}", headers,
                                opts.requests_for, opts.connections, tmp, opts.keep)
                    runs.append(res)
                    print(f"{label} {name}: {res['per_request']} instructions per request "
                          f"({res['requests']} requests)", file=sys.stderr)
                results["cases"][label] = {
                    "case": name + (f" ({bin_dir})" if build else ""),
                    "per_request": [r["per_request"] for r in runs],
                    "requests": [r["requests"] for r in runs],
                    "top": runs[0]["top"],
                }
        report(results)
        harness.write_json(opts.json, results)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def report(results):
    cases = results["cases"]
    print(f"\nInstructions per request (callgrind; {results['commit']}; {results['seconds']} s counted per case)\n")
    print("| case | | instructions per request |")
    print("|---|---|---:|")
    for letter, c in cases.items():
        print(f"| {letter} | {c['case']} | {', '.join(f'{v:,}' for v in c['per_request'])} |")
    med = {k: sorted(v["per_request"])[len(v["per_request"]) // 2] for k, v in cases.items()}
    for x, y in (("d", "h"), ("e", "a"), ("d", "D"), ("e", "E"), ("h", "H"), ("v", "V")):
        if x in med and y in med:
            print(f"{x} − {y}: {med[x] - med[y]:+,} instructions per request ({med[x] / med[y]:.3f} ×)")


if __name__ == "__main__":
    main()
