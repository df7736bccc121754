#!/usr/bin/env python3
"""Per-request CPU budget of the gate (issue 16 item 2): where each
microsecond of a request goes.

    python3 benches/load/profile.py [--no-build] [--duration 10] [--json F]

Starts what `harness.py` starts (upstream, private redis-server, the gate on
Redis, the bare hyper proxy), then for each of

  a  the upstream alone (a bare hyper server answering 200): what e would
     cost without the gate's work (its ceiling)
  d  the gate's proxy, one valid token (cache hit)
  e  the gate's /auth/nginx alone
  h  the bare hyper proxy (the gate's HTTP stack, no authorization)
  k  the gate as Envoy's gRPC ext_authz (deploy/envoy/envoy.yaml; the gate
     profiled, its CPU per request Envoy proxied)
  m  the null gRPC authorizer in its place (examples/load-null-authz):
     what any gRPC authorizer pays for the call alone

drives wrk (1 thread, 50 connections) while `perf record -e cpu-clock`
samples the server's process only. The server's CPU time over the run
divided by the requests served is its CPU per request; perf's flat profile
(self time per symbol, `--no-children`) splits it into the groups below,
so each row is microseconds per request. Inlined code is counted where it
was inlined (the proxy's service closure holds most of the gate's own
work). Needs `perf` (linux-perf) and wrk, nginx is not used.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (the load harness's shared parts)

# (group, dso pattern, symbol pattern): the first match wins; the order
# puts specific groups before general ones.
GROUPS = [
    ("kernel: TCP send", r"kernel", r"tcp_sendmsg|tcp_write_xmit|__tcp_transmit|tcp_push|ip_|__ip_|dev_|loopback|__dev|netif|net_rx|__netif|process_backlog|__napi|skb|tcp_v4_rcv|tcp_rcv|tcp_ack|tcp_data|tcp_event|sock_def_readable|__tcp|tcp_"),
    ("kernel: TCP receive", r"kernel", r"tcp_recvmsg|sock_recvmsg|inet_recvmsg|skb_copy_datagram"),
    ("kernel: epoll, wake-ups, scheduling", r"kernel", r"epoll|ep_|futex|schedule|try_to_wake|wake_up|enqueue|dequeue|pick_next|finish_task|update_curr|select_task|psi_|__switch_to|switch_mm|ttwu|sched"),
    ("kernel: syscall entry and exit", r"kernel", r"entry_SYSCALL|syscall|do_syscall|__x64_sys|exit_to_user|fpregs|restore_|__fget|fdget|__fdget|fput|rw_verify|security_|apparmor|ksys_|vfs_|sock_write|sock_read|__sys_|sock_sendmsg|__sock|aa_"),
    ("kernel: other", r"kernel", r"."),
    ("allocator (malloc/free)", r".", r"^_?mi_|^mi_|malloc|free$|_int_free|cfree|realloc|calloc|__rust_alloc|__rust_dealloc|__rdl_|tcache"),
    ("memcpy, memmove, memset", r".", r"memcpy|memmove|memset|memcmp|__memc|bcmp"),
    ("gate: decision (policy, roles, token parse, hash)", r".", r"hawzu_gate::(decide|policy|token|refusal)|blake3|subtle"),
    ("gate: identity headers", r".", r"hawzu_gate::headers"),
    ("gate: cache (moka)", r".", r"hawzu_gate::cache|moka|crossbeam|quanta|tagptr"),
    ("gate: usage tally, metrics, access log", r".", r"hawzu_gate::(usage|metrics|telemetry|traces)|prometheus|tracing"),
    ("gate: doors and proxying (service, forwarding)", r".", r"hawzu_gate::"),
    ("hyper HTTP/1, `http` header types", r".", r"^(?!<?h2::)(.*(hyper::proto|httparse|hyper::headers|http::header|http::uri|http::method|http::status|HeaderMap|HeaderValue|HeaderName|http::))"),
    ("hyper client and pool (hyper-util)", r".", r"hyper_util::client|hyper::client|want::|pool"),
    ("hyper server, body, service glue", r".", r"^(?!<?h2::)(.*(hyper|hyper_util|tower|bytes::))"),
    ("h2 (HTTP/2 framing, HPACK; gRPC's transport)", r".", r"h2::"),
    ("tonic, prost (gRPC, protobuf)", r".", r"tonic|prost|envoy_types"),
    ("tokio (runtime, I/O driver, timers)", r".", r"tokio|mio|parking_lot"),
    ("Rust core/std (fmt, hashing, locks, other)", r".", r"core::|std::|alloc::|hashbrown|__rust"),
    ("libc other", r"libc", r"."),
    ("other", r".", r"."),
]


def group_of(dso, sym):
    for group, dso_re, sym_re in GROUPS:
        if re.search(dso_re, dso) and re.search(sym_re, sym):
            return group
    return "other"


def categorize(rows):
    out = {g: 0.0 for g, _, _ in GROUPS}
    for pct, dso, sym in rows:
        out[group_of(dso, sym)] += pct
    return out


def perf_rows(data):
    """(percent, dso, symbol) of a flat profile, self time."""
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio",
                          "--percent-limit", "0", "-q"], capture_output=True, text=True)
    rows = []
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3).strip()))
    return rows


def profile_case(name, url, headers, pid, duration, connections, tmp):
    data = os.path.join(tmp, f"perf-{name}.data")
    before = harness.cpu_seconds(pid)
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4999", "-p", str(pid), "-o", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res = harness.wrk(url, duration, connections, headers)
    perf.send_signal(2)
    perf.wait(30)
    cpu = harness.cpu_seconds(pid) - before
    requests = res["rps"] * duration
    us = cpu / requests * 1e6
    rows = perf_rows(data)
    groups = categorize(rows)
    total = sum(groups.values()) or 1.0
    return {
        "rps": round(res["rps"]),
        "p99_ms": res["p99_ms"],
        "non2xx": res["non2xx"],
        "cpu_us_per_request": round(us, 2),
        "budget_us": {g: round(us * v / total, 2) for g, v in groups.items() if v > 0},
        # The symbols that cost the most, µs per request each, with their group.
        "top": [[round(us * pct / total, 3), group_of(dso, sym), sym]
                for pct, dso, sym in sorted(rows, reverse=True)[:150]],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="deh")
    ap.add_argument("--json")
    ap.add_argument("--no-build", action="store_true")
    opts = ap.parse_args()
    for tool in ("wrk", "perf", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed: apt-get install wrk linux-perf redis-server")
    if not opts.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "hawzu-gate", "--example", "load-upstream",
                        "--example", "load-bare-proxy"], cwd=harness.ROOT, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=harness.ROOT, capture_output=True,
                            text=True).stdout.strip()
    procs = harness.Procs()
    tmp = tempfile.mkdtemp(prefix="hawzu-profile-")
    results = {"commit": commit, "duration_s": opts.duration, "connections": opts.connections,
               "threads": opts.threads, "cases": {}}
    try:
        _, redis_port = harness.start_redis(procs)
        upstream, up_port = harness.start_upstream(procs, opts.threads)
        prefix = f"profile:{int(time.time())}:"
        conf, ports, data = harness.gate_config(tmp, "gate", redis_port, prefix, up_port, 1_000_000, opts.threads)
        gate, key = harness.start_gate(procs, "gate", conf, ports, data)
        auth = harness.create_token(ports["admin"], key, "profile")
        bare_port = harness.free_port()
        bare = procs.start("bare", [os.path.join(harness.RELEASE, "examples", "load-bare-proxy"),
                                    f"127.0.0.1:{bare_port}", f"127.0.0.1:{up_port}", str(opts.threads)])
        harness.wait_port(bare_port, "bare proxy")
        cases = {
            "a": ("upstream alone", f"http://127.0.0.1:{up_port}{harness.PATH}", [], upstream.pid),
            "d": ("gate proxy, cache hit", f"http://127.0.0.1:{ports['proxy']}{harness.PATH}", [auth], gate.pid),
            "e": ("gate /auth/nginx alone", f"http://127.0.0.1:{ports['auth']}/auth/nginx",
                  [auth, "X-Original-Method: GET", f"X-Original-URI: {harness.PATH}"], gate.pid),
            "h": ("bare hyper proxy", f"http://127.0.0.1:{bare_port}{harness.PATH}", [], bare.pid),
        }
        if any(c in opts.cases for c in "km"):
            null_port = harness.free_port()
            null = procs.start("null-authz", [os.path.join(harness.RELEASE, "examples", "load-null-authz"),
                                              f"127.0.0.1:{null_port}", str(opts.threads)])
            harness.wait_port(null_port, "null authorizer")
            for letter, name, authz_port, pid in (("k", "Envoy + gate, gRPC ext_authz", ports["grpc"], gate.pid),
                                                  ("m", "Envoy + null gRPC authorizer", null_port, null.pid)):
                port = harness.free_port()
                conf_path = harness.envoy_conf(tmp, f"envoy-{letter}", "envoy.yaml", port, up_port,
                                               ("port_value: 9001", authz_port))
                harness.start_envoy(procs, f"envoy-{letter}", conf_path, port, opts.threads)
                cases[letter] = (name, f"http://127.0.0.1:{port}{harness.PATH}", [auth], pid)
        # A short warm-up of each, unmeasured (connections, cache, pools).
        for c in opts.cases:
            _, url, headers, _ = cases[c]
            harness.wrk(url, 2, opts.connections, headers)
        for c in opts.cases:
            name, url, headers, pid = cases[c]
            res = profile_case(c, url, headers, pid, opts.duration, opts.connections, tmp)
            res["case"] = name
            results["cases"][c] = res
            print(f"{c} {name}: {res['rps']} req/s, {res['cpu_us_per_request']} µs CPU per request",
                  file=sys.stderr)
        report(results)
        harness.write_json(opts.json, results)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def report(results):
    cases = results["cases"]
    letters = list(cases)
    groups = [g for g, _, _ in GROUPS if any(g in cases[c]["budget_us"] for c in letters)]
    print(f"\nCPU per request, µs (commit {results['commit']}, {results['duration_s']} s per case)\n")
    print("| where | " + " | ".join(letters) + (" | d − h |" if "d" in cases and "h" in cases else " |"))
    print("|---|" + "---:|" * (len(letters) + ("d" in cases and "h" in cases)))
    for g in groups:
        vals = [cases[c]["budget_us"].get(g, 0.0) for c in letters]
        row = f"| {g} | " + " | ".join(f"{v:.2f}" for v in vals)
        if "d" in cases and "h" in cases:
            row += f" | {cases['d']['budget_us'].get(g, 0.0) - cases['h']['budget_us'].get(g, 0.0):+.2f}"
        print(row + " |")
    tot = [cases[c]["cpu_us_per_request"] for c in letters]
    row = "| **total** | " + " | ".join(f"**{v:.2f}**" for v in tot)
    if "d" in cases and "h" in cases:
        row += f" | **{cases['d']['cpu_us_per_request'] - cases['h']['cpu_us_per_request']:+.2f}**"
    print(row + " |")
    print("| req/s | " + " | ".join(str(cases[c]["rps"]) for c in letters) + (" | |" if "h" in cases and "d" in cases else " |"))


if __name__ == "__main__":
    main()
