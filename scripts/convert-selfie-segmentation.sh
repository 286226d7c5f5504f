#!/usr/bin/env bash
# Regenerates assets/models/selfie_segmentation.onnx (committed, 450 KB, Apache-2.0) from the
# MediaPipe selfie segmentation model inside the npm package @mediapipe/selfie_segmentation, with
# tf2onnx from PyPI. tf2onnx leaves one TFLite custom op (Convolution2DTransposeBias: a 2x2,
# stride-2 transposed convolution plus bias, NHWC) that ONNX Runtime cannot run; it is replaced
# by the standard ConvTranspose between two transposes. Needs a Python with
# `pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnx` (about 600 MB), so it is not part of
# setup; run it only to reproduce the file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent @mediapipe/selfie_segmentation@0.1.1675465747 >/dev/null && tar -xzf mediapipe-selfie_segmentation-*.tgz)
"$PY" -m tf2onnx.convert --tflite "$WORK/package/selfie_segmentation.tflite" --output "$WORK/raw.onnx" --opset 13
"$PY" - "$WORK/raw.onnx" assets/models/selfie_segmentation.onnx <<'PYEOF'
import sys
import numpy as np
import onnx
from onnx import helper, numpy_helper

src, dst = sys.argv[1], sys.argv[2]
model = onnx.load(src)
graph = model.graph
weights = {t.name: t for t in graph.initializer}
producer = {out: node for node in graph.node for out in node.output}
for index, node in enumerate(list(graph.node)):
    if node.op_type != "TFL_Convolution2DTransposeBias":
        continue
    # Its input is NCHW data transposed to NHWC: take the NCHW tensor before that transpose.
    to_nhwc = producer[node.input[0]]
    assert to_nhwc.op_type == "Transpose", to_nhwc.op_type
    nchw = to_nhwc.input[0]
    kernel = numpy_helper.to_array(weights[node.input[1]])  # O, H, W, I (TFLite)
    out_ch, kh, kw, _ = kernel.shape
    onnx_kernel = np.ascontiguousarray(kernel.transpose(3, 0, 1, 2))  # I, O, H, W (ONNX)
    kernel_name = f"{node.name}_kernel"
    graph.initializer.append(numpy_helper.from_array(onnx_kernel, kernel_name))
    deconv = helper.make_node(
        "ConvTranspose", [nchw, kernel_name, node.input[2]], [f"{node.name}_nchw"],
        strides=[2, 2], kernel_shape=[kh, kw], name=f"{node.name}_deconv")
    back = helper.make_node("Transpose", [f"{node.name}_nchw"], list(node.output), perm=[0, 2, 3, 1],
                            name=f"{node.name}_to_nhwc")
    graph.node.remove(node)
    graph.node.insert(index, back)
    graph.node.insert(index, deconv)
for opset in model.opset_import:
    if opset.domain in ("", "ai.onnx"):
        opset.version = max(opset.version, 14)
onnx.checker.check_model(model)
onnx.save(model, dst)
print(f"wrote {dst}")
PYEOF
sha256sum assets/models/selfie_segmentation.onnx
