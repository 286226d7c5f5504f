#!/usr/bin/env bash
# Nightly-style performance guard (not part of CI: timings need a quiet machine). Renders the
# storyboard shapes issue 17 names with `reelsmith bench render`, each beside FFmpeg encoding
# the same frames alone, and fails when a figure goes past its limit (`--fail-if`). The limits
# are the figures in docs/BENCHMARKS.md plus room for noise; tighten them as the engine gets faster.
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

shape landscape-1080p --width 1920 --height 1080 --scenes 6 \
  --fail-if cold_vs_reference=1.3 --fail-if cpu_vs_reference=1.35 --fail-if edit_vs_cold=0.3 \
  --fail-if identical_ms=200 --fail-if peak_rss_mb=450
shape vertical-music --width 1080 --height 1920 --scenes 6 --music \
  --fail-if cold_vs_reference=1.3 --fail-if cpu_vs_reference=1.35 --fail-if edit_vs_cold=0.32 \
  --fail-if identical_ms=200 --fail-if peak_rss_mb=450
# Eight scenes of three sentences: about a minute of video.
shape sixty-seconds-720p --width 1280 --height 720 --scenes 8 --sentences 3 --music \
  --fail-if cold_vs_reference=1.45 --fail-if edit_vs_cold=0.3 --fail-if identical_ms=200 --fail-if peak_rss_mb=300
shape live-720p --width 1280 --height 720 --scenes 6 --sentences 1 --live \
  --fail-if first_piece_s=2 --fail-if cold_vs_reference=1.35
echo "every shape within its limits; figures in $OUT/*.json"
