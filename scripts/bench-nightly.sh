#!/usr/bin/env bash
# Nightly-style performance guard (not part of CI: timings need a quiet machine). Renders the
# storyboard shapes issue 17 names with `reelsmith bench render`, each beside FFmpeg encoding
# the same frames alone, and fails when a figure goes past its limit (`--fail-if`); the live
# stream through the service; the talking photo. About 10 minutes on 2 cores.
#
#   CARGO_TARGET_DIR=/work/target-release cargo build --release -p reelsmith
#   REELSMITH_BIN=/work/target-release/release/reelsmith scripts/bench-nightly.sh [out-dir]
set -euo pipefail
BIN=${REELSMITH_BIN:-target/release/reelsmith}
OUT=${1:-bench-nightly}
mkdir -p "$OUT"

shape() {
  local name=$1
  shift
  echo "== $name"
  "$BIN" bench render --dir "$OUT/$name" --json "$OUT/$name.json" "$@"
}

# Limits: the targets of issue 17 where a run on this 2-core VM stays under them with room for
# its noise (about 10% from run to run); cold and CPU ratios get ~10% over the figures of
# docs/BENCHMARKS.md. Memory is held to the target itself (400 MB at 1080p, flat in length).
shape landscape-1080p --width 1920 --height 1080 --scenes 6 --memory-scaling \
  --fail-if cold_vs_reference=1.15 --fail-if cpu_vs_reference=1.2 --fail-if cores_idle=0.1 \
  --fail-if edit_vs_cold=0.3 --fail-if identical_ms=50 --fail-if peak_rss_mb=400 --fail-if memory_ratio=1.1
shape vertical-music --width 1080 --height 1920 --scenes 6 --music \
  --fail-if cold_vs_reference=1.15 --fail-if cpu_vs_reference=1.2 --fail-if cores_idle=0.1 \
  --fail-if edit_vs_cold=0.3 --fail-if identical_ms=50 --fail-if peak_rss_mb=400
# Eight scenes of three sentences: about a minute of video.
shape sixty-seconds-720p --width 1280 --height 720 --scenes 8 --sentences 3 --music \
  --fail-if cold_vs_reference=1.15 --fail-if cpu_vs_reference=1.25 --fail-if cores_idle=0.1 \
  --fail-if edit_vs_cold=0.3 --fail-if identical_ms=50 --fail-if peak_rss_mb=250
shape live-720p --width 1280 --height 720 --scenes 6 --sentences 1 --live \
  --fail-if first_piece_s=2 --fail-if cold_vs_reference=1.15 --fail-if peak_rss_mb=250

# The same six-scene 720p storyboard through the service (a server of its own, renders in
# processes of their own): submission until a player has the live stream's first piece.
echo "== live-720p through the service"
"$BIN" bench e2e "$OUT/live-720p/assets/storyboard.json" --iterations 1 --out "$OUT/live-720p-e2e.json" \
  --fail-if first_playable_s=2

# The talking photo: 10 s, Piper, blinks, head motion, subtitles; cold, each run a process of its
# own, beside the voice alone (`reelsmith speak`) plus FFmpeg encoding its frames from RAM in the
# same run. At 720x720 (the example) and at 1280x720 (the same portrait, fitted with a blurred
# fill). The ratio holds from a fast day of this VM to a slow one; the seconds are held to the
# target itself, 2 s, which this 2-core VM meets on its usual days and misses on its slow ones,
# when the voice and the encoder alone take longer (docs/BENCHMARKS.md, 2026-12-07).
talking() {
  local name=$1 spec=$2
  echo "== $name"
  "$BIN" bench talking-photo "$spec" --dir "$OUT/$name" --json "$OUT/$name.json" \
    --fail-if vs_reference=1.3 --fail-if peak_rss_mb=400 --fail-if wall_s=2
}
talking talking-photo-10s examples/talking-photo/talking-photo-10s.json
talking talking-photo-10s-720p examples/talking-photo/talking-photo-10s-720p.json
echo "every shape within its limits; figures in $OUT/*.json"
