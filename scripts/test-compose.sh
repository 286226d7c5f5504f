#!/usr/bin/env bash
# Tests deploy/compose.yaml by using it under podman compose: the topology comes up (the time
# from `up` to both API nodes' /ready is printed), a generation submitted to one API node is
# rendered across both workers and downloaded from the other API node; then a worker container
# is killed while a second video renders, and that video still completes on the other worker.
# Needs the images (scripts/build-image.sh --infra). Not part of CI (deploy/README.md says why).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/podman-env.sh
say() { printf 'test-compose: %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }
project=reelsmith-compose-test
compose=(podman-compose --project-name "$project" -f deploy/compose.yaml)
cleanup() { "${compose[@]}" down >/dev/null 2>&1 || true; }
cleanup
trap cleanup EXIT

start=$(date +%s.%N)
"${compose[@]}" up -d >/dev/null 2>&1
for port in 8081 8082; do
  for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null || { "${compose[@]}" logs 2>&1 | tail -40; fail "api on $port not ready"; }
done
say "up to /ready on both API nodes: $(python3 -c "import time; print(f'{time.time() - $start:.1f} s')")"

api1=$(podman ps --format '{{.Names}}' | grep "^${project}_api1_")
token=$(podman exec "$api1" reelsmith keys create compose-test)
workers=$(podman ps --format '{{.Names}}' | grep "^${project}_worker" | sort)
[ "$(echo "$workers" | wc -l)" = 2 ] || fail "two workers expected: $workers"
out=$(mktemp -d)
trap 'cleanup; rm -rf "$out"' EXIT

# Each worker's node name starts with its container's host name.
hosts=$(for w in $workers; do podman inspect --format '{{.Config.Hostname}}' "$w"; done | tr '\n' ' ')
REELSMITH_TOKEN=$token HOSTS=$hosts WORKERS=$(echo $workers | tr '\n' ' ') OUT=$out python3 - <<'PY'
import json, os, subprocess, time, urllib.request

token, out = os.environ["REELSMITH_TOKEN"], os.environ["OUT"]
hosts = os.environ["HOSTS"].split()
containers = os.environ["WORKERS"].split()

def call(port, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST" if body else "GET",
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read()
        return json.loads(data) if r.headers.get("content-type", "").startswith("application/json") else data

def storyboard(n, seconds, tag, size=(320, 180, 15)):
    colours = ["#c03020", "#20a040", "#2040c0", "#c0a020", "#a020c0", "#20a0c0"]
    w, h, fps = size
    return {"spec": {"version": 1, "output": {"width": w, "height": h, "fps": fps},
                     "scenes": [{"title": f"{tag} {i}", "duration": seconds,
                                 "background": {"gradient": {"from": colours[i % 6], "to": colours[(i + 1) % 6], "angle": 30}},
                                 "motion": {"type": "ken-burns", "zoom_from": 1.0, "zoom_to": 1.3, "pan": "right"}}
                                for i in range(n)]}}

def wait(port, gid, limit, on_poll=None, every=0.2):
    end = time.time() + limit
    while time.time() < end:
        s = call(port, f"/api/v1/generations/{gid}")
        if s["status"] in ("succeeded", "failed", "cancelled"):
            return s
        if on_poll:
            on_poll(s)
        time.sleep(every)
    raise SystemExit(f"generation {gid} did not finish in {limit} s: {s}")

def segment_hosts(s):
    seen = set()
    for j in s.get("segment_jobs") or []:
        for a in j["attempts"]:
            seen.update(h for h in hosts if a["worker"].startswith(h))
    return seen

def probe(path):
    p = json.loads(subprocess.check_output(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", path]))
    return float(p["format"]["duration"])

# Submitted to api1, rendered by both workers, downloaded from api2.
g = call(8081, "/api/v1/generations", storyboard(6, 1.2, "Compose"))
s = wait(8081, g["id"], 300)
assert s["status"] == "succeeded", s
used = segment_hosts(s)
assert len(used) == 2, f"both workers rendered segments: {used} of {hosts}; {s.get('segment_jobs')}"
video = call(8082, f"/api/v1/generations/{g['id']}/video")
open(f"{out}/across.mp4", "wb").write(video)
assert abs(probe(f"{out}/across.mp4") - 7.2) < 0.4
print("test-compose: a video submitted to api1 was rendered by both workers and downloaded from api2")

# A worker killed mid-segment (1080p segments, each seconds of work; the kill comes within
# 300 ms of a segment's start): the video still completes.
g = call(8082, "/api/v1/generations", storyboard(4, 10.0, "Survive", (1920, 1080, 30)))
killed = []
def kill_a_busy_worker(s):
    if killed:
        return
    for j in s.get("segment_jobs") or []:
        if j["status"] != "running" or not j["attempts"]:
            continue
        if time.time() * 1000 - j["attempts"][-1]["started_at_ms"] > 300:
            continue
        worker = j["attempts"][-1]["worker"]
        for h, c in zip(hosts, containers):
            if worker.startswith(h):
                # SIGKILL: a worker stopped with SIGTERM would finish or hand back its job.
                subprocess.run(["podman", "kill", "--signal", "KILL", c], check=True, capture_output=True)
                subprocess.run(["podman", "rm", "-f", c], check=True, capture_output=True)
                killed.append((c, h, j["index"]))
                return
s = wait(8082, g["id"], 600, kill_a_busy_worker, every=0.05)
assert killed, "no segment was seen running"
assert s["status"] == "succeeded", s
container, host, index = killed[0]
attempts = [(a["worker"], a["outcome"]) for j in s["segment_jobs"] if j["index"] == index for a in j["attempts"]]
everything = [(j["index"], [(a["worker"], a["outcome"]) for a in j["attempts"]]) for j in s["segment_jobs"]]
assert any(w.startswith(host) and o == "lost" for w, o in attempts), \
    f"the killed worker's ({container}, {host}) attempt at segment {index} is lost: {attempts}; all: {everything}; {hosts} {containers}"
assert any(not w.startswith(host) and o == "succeeded" for w, o in attempts), f"the other worker took it: {attempts}"
video = call(8081, f"/api/v1/generations/{g['id']}/video")
open(f"{out}/survived.mp4", "wb").write(video)
assert abs(probe(f"{out}/survived.mp4") - 40.0) < 0.6
print(f"test-compose: {container} was killed in segment {index}; its lease ran out and the other worker rendered it")
PY
say "passed"
