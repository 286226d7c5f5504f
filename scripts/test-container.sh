#!/usr/bin/env bash
# Tests the container image by using it: it builds (scripts/build-image.sh, after
# scripts/package-deb.sh), starts, runs as its non-root user, reports healthy through its own
# health check, renders a storyboard submitted over HTTP from the host, and renders the packaged
# example from inside. Prints the image's size. Not part of CI (deploy/README.md says why).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/podman-env.sh
say() { printf 'test-container: %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image="localhost/reelsmith:$version"
[ "${1:-}" = "--no-build" ] || bash scripts/build-image.sh
say "$image: $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cid=$(podman run -d -p "127.0.0.1:$port:8080" -e REELSMITH_SIGNING_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" "$image")
out=$(mktemp -d)
trap 'podman rm -f "$cid" >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
[ "$(podman exec "$cid" id -un)" = reelsmith ] || fail "not running as reelsmith"
[ "$(podman exec "$cid" id -u)" = 999 ] || fail "uid is not 999"
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { podman logs "$cid"; fail "no /health"; }
podman healthcheck run "$cid" || fail "the image's health check failed"
say "running as reelsmith (uid 999); /health answers; the health check passes"

token=$(podman exec "$cid" reelsmith keys create container-test)
spec='{"spec": {"version": 1, "output": {"width": 320, "height": 180, "fps": 15},
        "scenes": [{"duration": 2.0, "background": {"color": "#22aa44"}, "title": "Container"}]}}'
id=$(curl -fsS -H "authorization: Bearer $token" -H 'content-type: application/json' -d "$spec" \
  "http://127.0.0.1:$port/api/v1/generations" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
status=queued
for _ in $(seq 1 300); do
  status=$(curl -fsS -H "authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/generations/$id" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  case "$status" in succeeded|failed) break ;; esac
  sleep 0.2
done
[ "$status" = succeeded ] || { podman logs "$cid" | tail -20; fail "generation: $status"; }
curl -fsS -H "authorization: Bearer $token" -o "$out/api.mp4" "http://127.0.0.1:$port/api/v1/generations/$id/video"
python3 - "$out/api.mp4" <<'PY'
import json, subprocess, sys
p = json.loads(subprocess.check_output(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name,width,height", "-of", "json", sys.argv[1]]))
v = [s for s in p["streams"] if s["codec_name"] == "h264"][0]
assert (v["width"], v["height"]) == (320, 180), v
assert abs(float(p["format"]["duration"]) - 2.0) < 0.3, p["format"]
PY
say "a storyboard submitted from the host rendered and downloaded"

podman exec "$cid" sh -c 'cp -r /usr/share/doc/reelsmith/examples/storyboard /tmp/example && cd /tmp/example && reelsmith render storyboard.json -o /tmp/example/example.mp4 >/dev/null'
podman cp "$cid:/tmp/example/example.mp4" "$out/example.mp4"
python3 - "$out/example.mp4" <<'PY'
import json, subprocess, sys
p = json.loads(subprocess.check_output(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name", "-of", "json", sys.argv[1]]))
assert sorted(s["codec_name"] for s in p["streams"]) == ["aac", "h264"], p
assert float(p["format"]["duration"]) > 8, p["format"]
PY
say "the example rendered inside the container"
say "passed"
