"""Disable/revoke-to-refusal latency under load (`run.py --revocation`):
an admin change on gate A, timed until gate B refuses the token.
"""
import math
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from harness import (
    PATH,
    admin_call,
    gate_config,
    start_gate,
)

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
