#!/usr/bin/env bash
# Builds the container images with podman, without any image registry:
#   localhost/reelsmith-base:bookworm   a minimal Debian 12 rootfs made by mmdebstrap from the
#                                       Debian mirror (cached in ~/.cache/reelsmith/images)
#   localhost/reelsmith:<version>       deploy/container/Containerfile: the .debs from dist/
#                                       (scripts/package-deb.sh) installed on that base
#   localhost/reelsmith-infra:bookworm  (with --infra) PostgreSQL, Redis and an S3 server for
#                                       deploy/compose.yaml
# Needs: podman, mmdebstrap (Debian packages; installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/podman-env.sh
missing=()
for tool in podman mmdebstrap runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ ${#missing[@]} -eq 0 ] || bash scripts/apt-install.sh "${missing[@]}" podman-compose netavark aardvark-dns uidmap

cache=${XDG_CACHE_HOME:-$HOME/.cache}/reelsmith/images
mkdir -p "$cache"
base="$cache/debian-bookworm-minbase.tar"
if ! podman image exists localhost/reelsmith-base:bookworm; then
  if [ ! -s "$base" ]; then
    echo "build-image: mmdebstrap Debian 12 (minbase) from deb.debian.org"
    mmdebstrap --quiet --format=tar --variant=minbase --include=ca-certificates bookworm "$base.part" \
      "deb http://deb.debian.org/debian bookworm main" \
      "deb http://deb.debian.org/debian bookworm-updates main" \
      "deb http://deb.debian.org/debian-security bookworm-security main"
    mv "$base.part" "$base"
  fi
  podman import --quiet "$base" localhost/reelsmith-base:bookworm >/dev/null
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ls dist/reelsmith_"$version"-1_amd64.deb dist/reelsmith-models_"$version"-1_amd64.deb >/dev/null ||
  { echo "build-image: run scripts/package-deb.sh first" >&2; exit 1; }
podman build "${PODMAN_BUILD_FLAGS[@]}" -f deploy/container/Containerfile -t "localhost/reelsmith:$version" .
if [ "${1:-}" = "--infra" ]; then
  podman build "${PODMAN_BUILD_FLAGS[@]}" --secret id=build-ca,src=/etc/ssl/certs/ca-certificates.crt \
    -f deploy/container/infra.Containerfile -t localhost/reelsmith-infra:bookworm .
fi
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep reelsmith
