#!/usr/bin/env bash
# Runs every test: installs what is missing, checks formatting, then the whole workspace's
# unit and end-to-end tests (which render and inspect real videos).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo test --workspace --locked "$@"
