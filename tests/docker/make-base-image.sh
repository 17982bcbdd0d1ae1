#!/usr/bin/env bash
# Makes the Debian base images the Dockerfile starts from when the machine
# cannot pull them (no route to Docker Hub): debootstrap --variant=minbase of
# bookworm from the machine's own Debian mirror, imported as
# debian:bookworm-slim and tagged debian:bookworm as well, so the same
# Dockerfile builds unchanged offline. Does nothing if both images exist or
# can be pulled.
set -euo pipefail
need=()
for image in debian:bookworm-slim debian:bookworm; do
  if docker image inspect "$image" >/dev/null 2>&1; then continue; fi
  if timeout 60 docker pull -q "$image" >/dev/null 2>&1; then continue; fi
  need+=("$image")
done
[ ${#need[@]} -eq 0 ] && exit 0

# The mirrors this machine's apt uses (deb822 .sources or one-line lists):
# the repository names no registry of its own.
apt_uri() {  # suite -> the first URI apt has for it
  local suite="$1" f
  local -a files=()
  # Only the files this machine has: awk stops at a missing one (a fresh
  # bookworm has debian.sources and no sources.list).
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk -v s="$suite" '
    /^URIs:/ {uri=$2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == s && !found) {print uri; found=1}}
    /^deb / && $0 !~ /^#/ {for (i = 3; i <= NF; i++) if ($i == s && !found) {print $2; found=1; break}}
    /^$/ {uri=""}' "${files[@]}" | head -n 1
}
mirror="${DEBIAN_MIRROR:-$(apt_uri bookworm)}"
security="${DEBIAN_SECURITY_MIRROR:-$(apt_uri bookworm-security)}"
[ -n "$mirror" ] || { echo "make-base-image: no bookworm mirror in /etc/apt: set DEBIAN_MIRROR" >&2; exit 1; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
echo "make-base-image: debootstrap bookworm (minbase) from $mirror for ${need[*]}"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
# As slim as the official image: no docs, no apt lists, no caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/* \
       "$root"/usr/share/info/*
{
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror"
  [ -z "$security" ] || printf 'deb %s bookworm-security main\n' "$security"
} > "$root/etc/apt/sources.list"
tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
docker tag debian:bookworm-slim debian:bookworm
docker image ls debian
