"""The load harness's shared parts: child processes, ports, wrk, the
servers' configurations (the gate, nginx, Envoy, Traefik) and the admin
API. Used by run.py (the comparison), revocation.py, misses.py and
profile.py; not run on its own.
"""
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
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


def start_redis(procs):
    """A private redis-server that keeps nothing on disk: (process, port)."""
    port = free_port()
    p = procs.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"])
    wait_port(port, "redis")
    return p, port


def start_upstream(procs, threads):
    """The minimal hyper upstream (`200 ok`) on `threads` threads: (process, port)."""
    port = free_port()
    p = procs.start("upstream", [os.path.join(RELEASE, "examples", "load-upstream"), f"127.0.0.1:{port}",
                                 str(threads)])
    wait_port(port, "upstream")
    return p, port


def create_token(admin_port, key, name):
    """A workspace viewer token that never expires, made through the admin
    API: its `Authorization` header line."""
    created = admin_call(admin_port, key, "POST", "/admin/v1/tokens", {
        "name": name, "workspace_id": "ws_1", "scope": {"type": "workspace", "role": "workspace_viewer"},
        "expires": "never"})
    return f"Authorization: Bearer {created['secret']}"


def write_json(path, results):
    """The run's results, when asked for (`--json`)."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)


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
