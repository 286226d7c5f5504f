#!/usr/bin/env bash
# Installs what the Studio page's browser test needs: Debian's Chromium and Node.js (apt), and
# playwright-core pinned by tests/browser/package-lock.json (npm). Browsers are never downloaded
# by playwright: the test points it at /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
bash scripts/apt-install.sh "${missing[@]}"
lock=tests/browser/package-lock.json
stamp=tests/browser/node_modules/.lock-installed
if [ ! -f "$stamp" ] || ! cmp -s "$lock" "$stamp"; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
  cp "$lock" "$stamp"
fi
