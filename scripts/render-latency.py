#!/usr/bin/env python3
"""Submit-to-finished time of talking-photo renders through the service, with renders on
threads of the server (render_memory_limit_mb = 0) and in render processes (the default),
servers taking turns in one run. Each render is cold (its narration differs), and the first
render of each server is reported apart: it loads the models in either case.

    python3 scripts/render-latency.py [BINARY] [RENDERS_PER_ROUND] [ROUNDS]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/reelsmith")
RENDERS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 2
EXAMPLE = os.path.join(ROOT, "examples/talking-photo")


def serve(limit_mb):
    data = tempfile.mkdtemp()
    env = dict(os.environ, REELSMITH_RENDER_MEMORY_LIMIT_MB=str(limit_mb), REELSMITH_LOG="warn")
    p = subprocess.Popen([BIN, "serve", "--bind", "127.0.0.1:0", "--data-dir", data], stdout=subprocess.PIPE, env=env)
    return p, p.stdout.readline().decode().split("listening on ")[1].strip()


def call(url, method, path, body=None, content_type="application/json"):
    r = urllib.request.Request(url + path, data=body, method=method, headers={"content-type": content_type})
    with urllib.request.urlopen(r) as resp:
        return json.loads(resp.read())


def one_server(limit_mb, tag):
    p, url = serve(limit_mb)
    try:
        with open(os.path.join(EXAMPLE, "portrait.jpg"), "rb") as f:
            photo = call(url, "POST", "/api/v1/assets", f.read(), "image/jpeg")["ref"]
        with open(os.path.join(EXAMPLE, "talking-photo-10s.json")) as f:
            spec = json.load(f)
        spec["scenes"][0]["image"] = photo
        text = spec["scenes"][0]["narration"]["text"]
        times = []
        for i in range(RENDERS):
            spec["scenes"][0]["narration"]["text"] = f"Take {tag} {i}. {text}"
            body = json.dumps({"spec": spec, "dedupe": False}).encode()
            started = time.time()
            g = call(url, "POST", "/api/v1/generations", body)
            while True:
                s = call(url, "GET", f"/api/v1/generations/{g['id']}")
                if s["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.01)
            assert s["status"] == "succeeded", s
            times.append(time.time() - started)
        return times
    finally:
        p.kill()


results = {"threads": [], "processes": []}
for r in range(ROUNDS):
    for name, limit in (("threads", 0), ("processes", 4096)):
        results[name].append(one_server(limit, f"{name}{r}"))
for name, rounds in results.items():
    first = [t[0] for t in rounds]
    rest = [x for t in rounds for x in t[1:]]
    print(
        f"{name:9}: first render {' '.join(f'{x:.2f}' for x in first)} s; "
        f"later renders median {statistics.median(rest):.2f} s ({' '.join(f'{x:.2f}' for x in rest)})"
    )
later = {n: statistics.median([x for t in r for x in t[1:]]) for n, r in results.items()}
print(f"later renders, processes / threads: {later['processes'] / later['threads']:.2f}x")
