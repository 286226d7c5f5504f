#!/usr/bin/env bash
# Service load benchmark: a release `reelsmith serve` on loopback with renders saturating both
# cores in the background, then `reelsmith bench load` per scenario with many concurrent users.
# Usage: scripts/bench-service.sh [USERS] [DURATION] [THINK]   (defaults: 200 20s 100ms..300ms)
# REELSMITH_BIN=path runs another build (comparing two builds in one session).
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-200}
DURATION=${2:-20s}
THINK=${3:-100ms..300ms}
BIN=${REELSMITH_BIN:-target/release/reelsmith}
[ -x "$BIN" ] || cargo build --release
DATA=$(mktemp -d /tmp/reelsmith-bench.XXXXXX)
OUT=${BENCH_OUT:-$DATA}
"$BIN" serve --bind 127.0.0.1:0 --data-dir "$DATA" > "$DATA/serve.out" 2> "$DATA/serve.err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA/artifacts" "$DATA/cache"' EXIT
for _ in $(seq 100); do grep -q listening "$DATA/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^reelsmith listening on //p' "$DATA/serve.out")
echo "server: $URL (data in $DATA)"

# Background renders: long 1080p Ken Burns scenes at the highest priority, so one is always running.
for i in $(seq 6); do
  curl -sf "$URL/api/v1/generations" -H 'content-type: application/json' -d "{\"priority\": 9, \"spec\": {\"version\": 1,
    \"output\": {\"size\": \"1080p\", \"fps\": 30, \"quality\": {\"preset\": \"medium\"}}, \"scenes\": [{\"title\": \"background $i $$\",
    \"duration\": 60, \"motion\": {\"type\": \"ken-burns\", \"zoom_to\": 1.4},
    \"background\": {\"gradient\": {\"from\": \"#102040\", \"to\": \"#f0c080\"}}}]}}" > /dev/null
done
sleep 3
curl -sf "$URL/api/v1/generations?status=running" | grep -q '"running"' || { echo "no render running"; exit 1; }

for scenario in health poll submit mixed; do
  echo "== $scenario: $USERS users, $DURATION, think $THINK, renders running =="
  "$BIN" bench load --url "$URL" --users "$USERS" --duration "$DURATION" --ramp-up 2s --think "$THINK" \
    --scenario "$scenario" --out "$OUT/load-$scenario.json"
  curl -sf "$URL/api/v1/generations?status=running" | grep -q '"running"' || echo "warning: no render was running at the end"
done
echo "== server's own view (performance report) =="
curl -sf "$URL/api/v1/performance/report?window=10m" | head -c 2000; echo
