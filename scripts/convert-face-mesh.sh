#!/usr/bin/env bash
# Regenerates assets/models/face_landmark.onnx (committed, 2.4 MB, Apache-2.0) from the MediaPipe
# face mesh model inside the npm package @mediapipe/face_mesh, with tf2onnx from PyPI. Needs a
# Python with `pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0` (about 600 MB), so it is not
# part of setup; run it only to reproduce the file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent @mediapipe/face_mesh@0.4.1657299874 >/dev/null && tar -xzf mediapipe-face_mesh-*.tgz)
# The packed assets file concatenates several models; the loader script lists their byte ranges.
"$PY" - "$WORK" <<'PYEOF'
import json, re, sys
work = sys.argv[1]
loader = open(f"{work}/package/face_mesh_solution_packed_assets_loader.js").read()
files = [json.loads(m) for m in re.findall(r'\{"filename": "[^"]+", "start": \d+, "end": \d+\}', loader)]
entry = next(f for f in files if f["filename"].endswith("/face_landmark.tflite"))
data = open(f"{work}/package/face_mesh_solution_packed_assets.data", "rb").read()
open(f"{work}/face_landmark.tflite", "wb").write(data[entry["start"]:entry["end"]])
PYEOF
"$PY" -m tf2onnx.convert --tflite "$WORK/face_landmark.tflite" --output assets/models/face_landmark.onnx --opset 13
sha256sum assets/models/face_landmark.onnx
