#!/usr/bin/env bash
# What the test suite needs beyond building and running Postern, from Debian
# bookworm packages: headless Chromium (demo.html through the edge), and a
# Docker engine, Compose and debootstrap (the Compose stack test). Idempotent.
set -euo pipefail
packages=(chromium docker.io docker-compose debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "test deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "test deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
