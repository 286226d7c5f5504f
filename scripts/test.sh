#!/usr/bin/env bash
# Runs every test: installs what is missing, checks formatting, then the whole workspace's
# unit and end-to-end tests (which render and inspect real videos), and prints one total.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Test-only tool: a speech recogniser (PyPI, with its English model) checks synthesized speech.
python3 -c "import pocketsphinx" 2>/dev/null || python3 -m pip install --quiet pocketsphinx==5.1.1
# Test-only: the Studio page's browser test drives Debian's Chromium with playwright-core (npm).
bash scripts/setup-browser-tests.sh
# Test-only: a real S3-compatible server (moto, PyPI) on loopback for the object-storage and
# scale-out tests. PostgreSQL (127.0.0.1:5432, database `test`) and Redis (6379) must already run.
# The fault tests also start private PostgreSQL and Redis servers of their own (same packages).
command -v redis-server >/dev/null && { [ -x /usr/local/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } ||
  bash scripts/apt-install.sh redis-server postgresql
REELSMITH_TEST_S3_ENDPOINT=$(bash scripts/s3-server.sh)
export REELSMITH_TEST_S3_ENDPOINT
cargo fmt --all -- --check
# The layer rules (docs/ARCHITECTURE.md): no module circles; server http/ and jobs/ apart.
python3 scripts/check-layers.py
# The Kubernetes manifests against the Kubernetes OpenAPI schemas (deploy/README.md).
bash scripts/check-manifests.sh
# Coverage-guided fuzzing (AFL++ via cargo-afl, installed once) of the spec parser: 60 s.
bash scripts/fuzz-afl.sh
# The fuzz targets (spec parser and validation, upload sniffer, multipart reader, generation
# envelope, D-ID talk request) mutate their committed seeds for this long each.
export REELSMITH_FUZZ_SECONDS="${REELSMITH_FUZZ_SECONDS:-60}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# With the local planner (llama.cpp in process) built in, so its end-to-end tests run too.
cargo test --workspace --locked --no-fail-fast --features reelsmith/local-llm "$@" 2>&1 | tee "$log" || status=$?
# cargo prints one "test result" line per test binary; add them up so the run ends on the total.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
