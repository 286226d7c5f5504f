#!/usr/bin/env bash
# Installs the given Debian packages (apt-get update first; through sudo when not root).
set -euo pipefail
if (($# == 0)); then exit 0; fi
echo "apt: installing $*" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
