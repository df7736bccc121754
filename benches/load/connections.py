#!/usr/bin/env python3
"""Memory per client connection of the gate's proxy door.

`python3 benches/load/connections.py [--connections N] [--alt DIR] [--json F]`

A gate on its embedded store in front of examples/load-upstream (release
builds; `--no-build` skips building them). N keep-alive connections are
opened and held (the resident set read after), then each sends one
proxied request with a valid token, one connection at a time so that the
gate keeps a single upstream connection (what is left is the cost of a
client connection, not of the upstream pool), and the resident set is
read again. Per connection: the growth divided by N, connected only and
after a request. With `--alt DIR` the same for DIR/hawzu-gate, alternating
build by build for `--rounds` rounds.
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

import harness
from harness import PATH, RELEASE, free_port, rss_kib, wait_port


def settle(pid, timeout=5.0):
    """The resident set once it stops growing (read every 100 ms)."""
    deadline = time.time() + timeout
    last = rss_kib(pid)
    while time.time() < deadline:
        time.sleep(0.1)
        now = rss_kib(pid)
        if now == last:
            return now
        last = now
    return last


def measure(binary, upstream_port, n, tmp):
    data = tempfile.mkdtemp(prefix="gate-", dir=tmp)
    ports = {k: free_port() for k in ("proxy", "auth", "grpc", "admin", "ops")}
    conf = os.path.join(data, "gate.toml")
    with open(conf, "w") as f:
        f.write(f'data_dir = "{data}"\n[listen]\n' +
                "".join(f'{k} = "127.0.0.1:{v}"\n' for k, v in ports.items()) +
                f'[upstream]\nurl = "http://127.0.0.1:{upstream_port}"\n[log]\nlevel = "warn"\n')
    procs = harness.Procs()
    try:
        gate = procs.start("gate", [binary, "serve", "--config", conf])
        for port in ports.values():
            wait_port(port, "gate")
        out = subprocess.run([binary, "--config", conf, "token", "create", "--name", "conns", "--workspace", "ws_1",
                              "--role", "workspace_viewer", "--expires", "30d"],
                             capture_output=True, text=True, check=True).stdout
        secret = next(w for w in out.split() if w.startswith("hwz_"))
        request = f"GET {PATH} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {secret}\r\n\r\n".encode()

        def ask(sock):
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    sys.exit("the gate closed a connection")
                head += chunk
            if not head.startswith(b"HTTP/1.1 200"):
                sys.exit(f"not allowed: {head[:80]!r}")

        warm = socket.create_connection(("127.0.0.1", ports["proxy"]), timeout=5)
        ask(warm)
        warm.close()
        before = settle(gate.pid)
        socks = [socket.create_connection(("127.0.0.1", ports["proxy"]), timeout=5) for _ in range(n)]
        connected = settle(gate.pid)
        for s in socks:
            ask(s)
        served = settle(gate.pid)
        for s in socks:
            s.close()
        return {
            "rss_before_kib": before,
            "connected_kib": connected,
            "served_kib": served,
            "bytes_per_connection_connected": round((connected - before) * 1024 / n),
            "bytes_per_connection_after_a_request": round((served - before) * 1024 / n),
        }
    finally:
        procs.stop_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--alt", metavar="DIR", help="another build: DIR/hawzu-gate")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--no-build", action="store_true")
    opts = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = opts.connections + 256
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            sys.exit(f"--connections {opts.connections} needs {want} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if not opts.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "hawzu-gate", "--example", "load-upstream"],
                       cwd=harness.ROOT, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=harness.ROOT, capture_output=True,
                            text=True).stdout.strip()
    builds = [("this", os.path.join(RELEASE, "hawzu-gate"))]
    if opts.alt:
        builds.append(("alt", os.path.join(opts.alt, "hawzu-gate")))
    procs = harness.Procs()
    tmp = tempfile.mkdtemp(prefix="hawzu-connections-")
    results = {"commit": commit, "connections": opts.connections, "runs": []}
    try:
        up_port = free_port()
        procs.start("upstream", [os.path.join(RELEASE, "examples", "load-upstream"), f"127.0.0.1:{up_port}"])
        wait_port(up_port, "upstream")
        for r in range(opts.rounds):
            for name, binary in builds:
                m = measure(binary, up_port, opts.connections, tmp)
                m.update(build=name, round=r + 1)
                results["runs"].append(m)
                print(f"round {r + 1} {name}: {m['bytes_per_connection_connected']} B per connection connected, "
                      f"{m['bytes_per_connection_after_a_request']} B after a request "
                      f"(RSS {m['rss_before_kib']} -> {m['served_kib']} KiB)", flush=True)
    finally:
        procs.stop_all()
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
