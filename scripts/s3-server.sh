#!/usr/bin/env bash
# A local S3-compatible server for the object-storage tests: moto's S3 server (PyPI, pinned),
# listening on 127.0.0.1:${REELSMITH_TEST_S3_PORT:-9333}. Idempotent: installs moto when it
# is missing, starts it in the background unless something already answers on the port, waits
# until it answers, and prints the endpoint (export it as REELSMITH_TEST_S3_ENDPOINT).
#
#   bash scripts/s3-server.sh          # → http://127.0.0.1:9333
#   bash scripts/s3-server.sh --stop   # stops the server this script started
#
# moto is installed with `pip install --target` into its own folder (no virtualenv needed,
# and no clash with the distribution's Python packages: works on Debian 12 as root or not).
# Needs python3 with pip; everything else comes from PyPI.
set -euo pipefail

MOTO_VERSION=5.2.5
PORT="${REELSMITH_TEST_S3_PORT:-9333}"
HOST=127.0.0.1
ENDPOINT="http://$HOST:$PORT"
BASE="${REELSMITH_S3_SERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reelsmith/s3-server}"
PKG="$BASE/moto-$MOTO_VERSION"
LOG="$BASE/moto-$PORT.log"
PIDFILE="$BASE/moto-$PORT.pid"

say() { echo "s3-server: $*" >&2; }

answers() {
    # Any HTTP answer will do (moto answers GET / with a bucket list).
    python3 - "$ENDPOINT" <<'PY' >/dev/null 2>&1
import sys, urllib.request, urllib.error
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
try:
    opener.open(sys.argv[1] + "/", timeout=2)
except urllib.error.HTTPError:
    pass  # an S3 error response is still an answer
PY
}

if [[ "${1:-}" == "--stop" ]]; then
    if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        kill "$(cat "$PIDFILE")" && say "stopped pid $(cat "$PIDFILE")"
    fi
    rm -f "$PIDFILE"
    exit 0
fi

if answers; then
    say "already answering at $ENDPOINT"
    echo "$ENDPOINT"
    exit 0
fi

command -v python3 >/dev/null || { say "python3 is required"; exit 1; }
mkdir -p "$BASE"

installed() {
    [[ -f "$PKG/.complete" ]] && PYTHONPATH="$PKG" python3 -c "import moto.server, flask, flask_cors" 2>/dev/null
}

if ! installed; then
    say "installing moto $MOTO_VERSION (S3 server) into $PKG"
    started=$(date +%s)
    rm -rf "$PKG.partial"
    # Only S3's extras plus the server's web stack, not moto[server]'s every-service set
    # (a third of the size and the time).
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$PKG.partial" "moto[s3]==$MOTO_VERSION" "flask==3.1.3" "flask-cors==6.0.5"
    rm -rf "$PKG"
    mv "$PKG.partial" "$PKG"
    touch "$PKG/.complete"
    say "installed in $(( $(date +%s) - started )) s"
fi

say "starting moto on $ENDPOINT (log: $LOG)"
# setsid + nohup: the server outlives this script and the shell that ran it.
PYTHONPATH="$PKG" setsid nohup python3 -m moto.server -H "$HOST" -p "$PORT" >"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"

for _ in $(seq 1 150); do # up to 30 s
    if answers; then
        say "ready"
        echo "$ENDPOINT"
        exit 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        say "moto exited; its log:"
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.2
done
say "moto did not answer at $ENDPOINT within 30 s; its log:"
cat "$LOG" >&2
exit 1
