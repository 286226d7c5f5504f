#!/usr/bin/env bash
# Validates the Kubernetes manifests against the Kubernetes OpenAPI schemas, strictly (unknown
# fields are errors): kubernetes-validate from PyPI, which bundles the schemas, pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.37.0
venv=${XDG_CACHE_HOME:-$HOME/.cache}/reelsmith/kubernetes-validate-$VERSION
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "kubernetes-validate==$VERSION"
fi
"$venv/bin/kubernetes-validate" --strict --quiet -k 1.37.0 deploy/kubernetes/*.yaml
echo "check-manifests: deploy/kubernetes valid against Kubernetes 1.37 (strict)"
