#!/usr/bin/env bash
# Installs what the Studio page's browser test needs: Debian's Chromium and Node.js (apt), and
# playwright-core pinned by tests/browser/package-lock.json (npm). Browsers are never downloaded
# by playwright: the test points it at /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "setup-browser-tests: installing ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
lock=tests/browser/package-lock.json
stamp=tests/browser/node_modules/.lock-installed
if [ ! -f "$stamp" ] || ! cmp -s "$lock" "$stamp"; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
  cp "$lock" "$stamp"
fi
