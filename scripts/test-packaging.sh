#!/usr/bin/env bash
# Builds the Debian packages (scripts/package-deb.sh) and tests them by using them on this
# machine: install with apt (dependencies from Debian), the system user, folders and modes, the
# units checked by systemd-analyze, the unit's own command line run as the service user (no
# systemd needed): /health, a key, a storyboard submitted over HTTP, rendered and downloaded;
# the CLI renders the packaged example and a Piper-voiced scene (the models package); then
# purge leaves nothing behind. Prints the packages' sizes.
#
# Not part of .ci/run: it needs a release build (about 15 minutes here on a clean tree) and it
# installs into the system (/usr/bin, /etc, a system user), which a test run must not do.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'test-packaging: %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }

bash scripts/package-deb.sh
deb=$(ls -t dist/reelsmith_*_amd64.deb | head -1)
models=$(ls -t dist/reelsmith-models_*_amd64.deb | head -1)
say "$(du -h "$deb" | cut -f1) $deb; $(du -h "$models" | cut -f1) $models"

dpkg --purge reelsmith reelsmith-models >/dev/null 2>&1 || true
apt-get install -y -qq "./$models" "./$deb" >/dev/null
say "installed"

# What the package set up.
getent passwd reelsmith >/dev/null || fail "no reelsmith user"
[ "$(stat -c %U:%a /var/lib/reelsmith)" = "reelsmith:750" ] || fail "/var/lib/reelsmith: $(stat -c %U:%a /var/lib/reelsmith)"
[ "$(stat -c %G:%a /etc/reelsmith/config.toml)" = "reelsmith:640" ] || fail "config mode"
[ "$(stat -c %U:%a /etc/default/reelsmith)" = "root:600" ] || fail "/etc/default/reelsmith mode"
grep -q '^REELSMITH_SIGNING_SECRET=[0-9a-f]\{64\}$' /etc/default/reelsmith || fail "no signing secret written"
unit=/lib/systemd/system/reelsmith.service
[ -f "$unit" ] && [ -f /lib/systemd/system/reelsmith-worker@.service ] || fail "units not installed"
systemd-analyze verify "$unit" /lib/systemd/system/reelsmith-worker@.service
for k in ProtectSystem=strict PrivateTmp=yes NoNewPrivileges=yes ReadWritePaths=/var/lib/reelsmith MemoryMax= TasksMax=; do
  grep -q "^$k" "$unit" || fail "unit lacks $k"
done
say "user, folders, config and units in place; systemd-analyze verify passed"

# The unit's command line, as its user, with its environment.
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
unit_env=(env $(grep -h '^[A-Z_]*=' /etc/default/reelsmith) REELSMITH_MODELS_DIR=/usr/share/reelsmith/models)
run_as() { runuser -u reelsmith -- "${unit_env[@]}" "$@"; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
# runuser passes SIGTERM on to the service, which stops as it would under systemd.
(cd /var/lib/reelsmith && exec runuser -u reelsmith -- "${unit_env[@]}" $exec_start --bind "127.0.0.1:$port" >"$log" 2>&1) &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { cat "$log"; fail "no /health"; }
token=$(cd /var/lib/reelsmith && run_as /usr/bin/reelsmith keys --config /etc/reelsmith/config.toml --data-dir /var/lib/reelsmith create packaging-test)
spec='{"spec": {"version": 1, "output": {"width": 320, "height": 180, "fps": 15},
        "scenes": [{"duration": 2.0, "background": {"color": "#cc2222"}, "title": "Installed"}]}}'
id=$(curl -fsS -H "authorization: Bearer $token" -H 'content-type: application/json' -d "$spec" \
  "http://127.0.0.1:$port/api/v1/generations" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 1 300); do
  status=$(curl -fsS -H "authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/generations/$id" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [ "$status" = succeeded ] || [ "$status" = failed ] && break
  sleep 0.2
done
[ "$status" = succeeded ] || { cat "$log"; fail "the service's generation: $status"; }
out=$(mktemp -d)
chmod 755 "$out"
curl -fsS -H "authorization: Bearer $token" -o "$out/service.mp4" "http://127.0.0.1:$port/api/v1/generations/$id/video"
probe() { ffprobe -v error -show_entries format=duration:stream=codec_name,width,height -of json "$1"; }
probe "$out/service.mp4" | python3 -c '
import json, sys
p = json.load(sys.stdin)
v = [s for s in p["streams"] if s["codec_name"] == "h264"][0]
assert (v["width"], v["height"]) == (320, 180), v
assert abs(float(p["format"]["duration"]) - 2.0) < 0.3, p["format"]
'
kill $server; wait $server 2>/dev/null || true
# Graceful: it stops once its connections and jobs are handed back (the unit allows 90 s).
for _ in $(seq 1 300); do pgrep -u reelsmith >/dev/null || break; sleep 0.1; done
! pgrep -u reelsmith >/dev/null || fail "the service did not stop within 30 s of SIGTERM"
say "the unit's command line served /health and rendered a storyboard submitted over HTTP"

# The CLI, as the service user: the packaged example (espeak-ng, music, pictures) and a Piper
# voice from the models package.
cp -r /usr/share/doc/reelsmith/examples/storyboard "$out/example"
chown -R reelsmith "$out"
(cd "$out" && run_as /usr/bin/reelsmith render example/storyboard.json -o example.mp4 >/dev/null)
probe "$out/example.mp4" | python3 -c '
import json, sys
p = json.load(sys.stdin)
names = sorted(s["codec_name"] for s in p["streams"])
assert names == ["aac", "h264"], names
assert float(p["format"]["duration"]) > 8, p["format"]
'
cat > "$out/piper.json" <<'SPEC'
{"version": 1, "output": {"width": 320, "height": 180, "fps": 15}, "voice": {"engine": "piper"},
 "scenes": [{"background": {"color": "#224488"}, "narration": {"text": "Installed from a package."}}]}
SPEC
(cd "$out" && run_as /usr/bin/reelsmith render piper.json -o piper.mp4 >/dev/null)
probe "$out/piper.mp4" | python3 -c '
import json, sys
p = json.load(sys.stdin)
assert float(p["format"]["duration"]) > 1.0, p["format"]
'
rm -rf "$out"
say "the installed CLI rendered the example and a Piper-voiced scene"

dpkg --purge reelsmith reelsmith-models >/dev/null
! getent passwd reelsmith >/dev/null || fail "purge left the user"
[ ! -e /var/lib/reelsmith ] && [ ! -e /usr/bin/reelsmith ] || fail "purge left files"
say "purged: user, data folder and binary gone"
say "passed"
