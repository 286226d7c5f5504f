#!/usr/bin/env bash
# Template rows through the CLI (issue 16's batch figure, before `reelsmith bench batch`): a
# 6-scene 720p template (narration, music, subtitles, transitions) where one scene carries
# {{ NAME }}; the first row cold, then 10 further rows, then one row with no cache.
# Usage: scripts/bench-template-rows.sh [path/to/reelsmith]   (default: target/release/reelsmith)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$root/target/release/reelsmith}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root"/examples/storyboard/*.jpg "$root"/examples/storyboard/music.ogg "$work/"
cat > "$work/template.json" <<'JSON'
{
  "fields": {"NAME": {"type": "string", "max_length": 40}},
  "version": 1,
  "output": {"size": "720p", "fps": 30},
  "music": {"file": "music.ogg", "volume": 0.3},
  "subtitles": {"style": "word-highlight"},
  "scenes": [
    {"background": {"gradient": {"from": "#1e3c72", "to": "#2a5298", "angle": 45}}, "title": "Our product", "narration": {"text": "Here is what we built this year."}, "transition": {"type": "crossfade", "duration": 0.5}},
    {"image": "mandelbrot.jpg", "narration": {"text": "It renders videos from one file."}, "motion": {"type": "ken-burns", "zoom_from": 1.0, "zoom_to": 1.15}, "transition": {"type": "slide", "duration": 0.5}},
    {"background": {"color": "#203040"}, "title": "Welcome, {{ NAME }}", "narration": {"text": "Welcome aboard, {{ NAME }}."}, "transition": {"type": "fade-black", "duration": 0.5}},
    {"image": "portrait.jpg", "fit": "contain-blur", "narration": {"text": "Every scene is cached by its content."}},
    {"image": "sunset.jpg", "narration": {"text": "An edit renders one scene again."}, "motion": {"type": "ken-burns", "zoom_from": 1.1, "zoom_to": 1.0}},
    {"background": {"gradient": {"from": "#402010", "to": "#a04020", "angle": 90}}, "title": "Thank you", "narration": {"text": "See you soon."}}
  ]
}
JSON
cd "$work"
export REELSMITH_CACHE_DIR="$work/cache"
mkdir -p out
t() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; python3 -c "import time; print(f'{time.time()-$s:.3f}')"; }
names=(Ada Grace Linus Margaret Dennis Barbara Ken Frances Donald Radia Edsger)
first=$(t "$BIN" render template.json -o out/0.mp4 --quiet --merge NAME=${names[0]})
echo "row 1 (cold): $first s"
total=0
for i in $(seq 1 10); do
  s=$(t "$BIN" render template.json -o "out/$i.mp4" --quiet --merge NAME=${names[$i]})
  echo "row $((i+1)): $s s"
  total=$(python3 -c "print($total + $s)")
done
cold=$(t "$BIN" render template.json -o out/cold.mp4 --quiet --no-cache --merge NAME=Zed)
echo "one row with no cache: $cold s"
python3 -c "print(f'further rows: mean {$total/10:.3f} s = {($total/10)/$first:.3f}x the first row; 11 rows {$first+$total:.1f} s = {($first+$total)/$cold:.2f}x one cold render')"
