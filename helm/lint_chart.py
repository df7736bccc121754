#!/usr/bin/env python3
"""Lint (and render) the hawzu-gate chart with PyPI's helm-sdkpy, no helm binary.

    python3 helm/lint_chart.py                                   # default values
    python3 helm/lint_chart.py -f helm/hawzu-gate/ci/sidecar-values.yaml
    python3 helm/lint_chart.py -f FILE --render out.yaml         # also write the manifests

helm-sdkpy's Lint.run(chart_path) takes no values file: it lints with the
chart's own values.yaml. To lint with a values file, this script copies the
chart to a temporary directory and replaces its values.yaml with the chart's
values deep-merged with the file (Helm's rule: maps merge, anything else is
replaced, null deletes the key), then lints that copy.

helm-sdkpy has no `template` / dry-run action either. Lint does render every
template, and in lint mode Helm's `fail` only logs its message (to stderr, as
`INFO funcMap fail message="..."`). --render adds one template to the copy
that `fail`s with every other template's output, and reads the manifests
back from that log line. The same log lines reveal the chart's own `fail`
checks (bad values), which lint itself does not count as errors.

Exit status: 0 when lint reported no error (Severity 3 = error, 2 = warning,
1 = info) and no chart `fail` fired; 1 otherwise.
"""
import argparse
import asyncio
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "hawzu-gate")
BEGIN, END = "@@HAWZU-RENDER-BEGIN@@", "@@HAWZU-RENDER-END@@"
SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def merge(base, over):
    """Helm's values coalescing: maps merge recursively, null deletes a key."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def prepare(chart, values_file, render, namespace="hawzu"):
    """A temporary copy of the chart with merged values (and the dump template)."""
    tmp = tempfile.mkdtemp(prefix="hawzu-gate-lint-")
    dst = os.path.join(tmp, os.path.basename(chart))
    shutil.copytree(chart, dst)
    if values_file:
        with open(os.path.join(chart, "values.yaml")) as f:
            base = yaml.safe_load(f) or {}
        with open(values_file) as f:
            over = yaml.safe_load(f) or {}
        with open(os.path.join(dst, "values.yaml"), "w") as f:
            yaml.safe_dump(merge(base, over), f, sort_keys=False)
    if render:
        with open(os.path.join(chart, "Chart.yaml")) as f:
            name = yaml.safe_load(f)["name"]
        tdir = os.path.join(dst, "templates")
        # Subfolders too (templates/tests/: the `helm test` hooks).
        names = sorted(
            os.path.relpath(os.path.join(d, n), tdir)
            for d, _, files in os.walk(tdir) for n in files
            if n.endswith((".yaml", ".yml", ".tpl", ".txt")) and not n.startswith("_")
            and n != "zz-render-dump.yaml"
        )
        parts = " ".join(
            f'(printf "\\n---\\n# Source: {n}\\n%s" (include "{name}/templates/{n}" .))'
            for n in names
        )
        with open(os.path.join(tdir, "zz-render-dump.yaml"), "w") as f:
            # Lint renders with an empty release namespace; give it one.
            f.write('{{- if kindIs "map" .Release }}'
                    f'{{{{- $_ := set .Release "Namespace" {json.dumps(namespace)} }}}}'
                    '{{- end }}\n')
            f.write(f'{{{{- fail (printf "{BEGIN}%s{END}" (print {parts})) }}}}\n')
    return tmp, dst


CHILD = r"""
import asyncio, json, sys
import helm_sdkpy
cfg = helm_sdkpy.Configuration()
try:
    result = asyncio.run(helm_sdkpy.Lint(cfg).run(sys.argv[1]))
except helm_sdkpy.ChartError as e:        # the lint action itself failed
    print(json.dumps({"exception": str(e)}))
    sys.exit(0)
print(json.dumps(result))
"""


def lint(chart_dir):
    """Runs Lint in a child process: Helm's Go logger writes to fd 2, which
    only a child process lets us capture. Returns (result dict, stderr)."""
    p = subprocess.run([sys.executable, "-c", CHILD, chart_dir],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"helm-sdkpy lint crashed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def fail_messages(stderr):
    """Messages of `fail` calls, from Helm's lint-mode log lines."""
    out = []
    for m in re.finditer(r'funcMap fail message=("(?:[^"\\]|\\.)*"|\S+)', stderr):
        raw = m.group(1)
        try:
            out.append(json.loads(raw) if raw.startswith('"') else raw)
        except json.JSONDecodeError:
            out.append(raw.strip('"').encode().decode("unicode_escape"))
    return out


def split_rendered(rendered):
    """(manifests as one multi-document YAML text, NOTES.txt text)."""
    manifests, notes = [], ""
    for part in rendered.split("\n---\n# Source: ")[1:]:
        name, _, body = part.partition("\n")
        if name == "NOTES.txt":
            notes = body
        elif body.strip():
            manifests.append(f"---\n# Source: {name}\n{body.strip()}\n")
    return "".join(manifests), notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-f", "--values", help="values file merged over the chart's values.yaml")
    ap.add_argument("--render", metavar="OUT", help="write the rendered manifests here")
    ap.add_argument("--namespace", default="hawzu",
                    help="release namespace for --render (lint itself leaves it empty)")
    ap.add_argument("--chart", default=CHART)
    a = ap.parse_args()

    tmp, chart_dir = prepare(a.chart, a.values, a.render, a.namespace)
    try:
        result, stderr = lint(chart_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if "exception" in result:
        print(f"lint action failed: {result['exception']}")
        return 1
    failed = False
    for msg in result.get("Messages") or []:
        sev = msg.get("Severity", 0)
        print(f"[{SEVERITY.get(sev, sev)}] {msg.get('Path')}")
        failed |= sev >= 3
    errors = result.get("Errors") or []
    failed |= bool(errors)

    rendered = None
    for m in fail_messages(stderr):
        if m.startswith(BEGIN):
            rendered = m[len(BEGIN):m.rindex(END)] if END in m else m[len(BEGIN):]
        else:
            print(f"[FAIL] chart check: {m}")
            failed = True
    if a.render:
        if rendered is None:
            print("could not capture the rendered templates")
            failed = True
        else:
            manifests, notes = split_rendered(rendered)
            with open(a.render, "w") as f:
                f.write(manifests)
            with open(a.render + ".NOTES.txt", "w") as f:
                f.write(notes)
            try:
                docs = [d for d in yaml.safe_load_all(manifests) if d]
                print(f"rendered {len(docs)} objects to {a.render}: " + ", ".join(
                    f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}" for d in docs))
            except yaml.YAMLError as e:
                print(f"rendered manifests are not valid YAML: {e}")
                failed = True
    print(f"lint: {result.get('TotalChartsLinted')} chart(s), {len(errors)} error(s)"
          + (" -> FAILED" if failed else " -> ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
