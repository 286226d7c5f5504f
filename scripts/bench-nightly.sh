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

# Limits: the figures of docs/BENCHMARKS.md (issue 17, sixth session) plus ~15% for this
# machine's run-to-run noise (the reference alone moves by that much).
shape landscape-1080p --width 1920 --height 1080 --scenes 6 \
  --fail-if cold_vs_reference=1.15 --fail-if cpu_vs_reference=1.2 --fail-if edit_vs_cold=0.25 \
  --fail-if identical_ms=100 --fail-if peak_rss_mb=430
shape vertical-music --width 1080 --height 1920 --scenes 6 --music \
  --fail-if cold_vs_reference=1.15 --fail-if cpu_vs_reference=1.2 --fail-if edit_vs_cold=0.25 \
  --fail-if identical_ms=100 --fail-if peak_rss_mb=430
# Eight scenes of three sentences: about a minute of video.
shape sixty-seconds-720p --width 1280 --height 720 --scenes 8 --sentences 3 --music \
  --fail-if cold_vs_reference=1.2 --fail-if cpu_vs_reference=1.3 --fail-if edit_vs_cold=0.25 \
  --fail-if identical_ms=100 --fail-if peak_rss_mb=250
shape live-720p --width 1280 --height 720 --scenes 6 --sentences 1 --live \
  --fail-if first_piece_s=2 --fail-if cold_vs_reference=1.15 --fail-if peak_rss_mb=250

# The talking photo: 10 s at 720x720, Piper, blinks, head motion, subtitles; cold.
echo "== talking-photo-10s"
"$BIN" render -q --no-cache --report "$OUT/talking-photo.json" \
  examples/talking-photo/talking-photo-10s.json -o "$OUT/talking-photo.mp4"
python3 - "$OUT/talking-photo.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  talking photo: {r['wall_s']:.2f} s for {r['duration_s']:.1f} s of video, peak {r['peak_tree_rss_mb']:.0f} MB")
over = [f"{name} {value:.2f} > {limit}" for name, value, limit in
        [("wall_s", r["wall_s"], 2.3), ("peak_tree_rss_mb", r["peak_tree_rss_mb"], 400)] if value > limit]
sys.exit(f"  over the limit: {', '.join(over)}" if over else 0)
PY
echo "every shape within its limits; figures in $OUT/*.json"
