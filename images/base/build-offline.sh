#!/usr/bin/env bash
# Builds the sandbox's base image without any container registry: a minimal Debian root file system
# made by debootstrap from the host's own package sources, with Python and the scientific packages,
# imported into the engine as $1 (an image name:tag).
#
# The mirror is read from the host's apt configuration, never hard-coded. Runs as root on Debian.
set -euo pipefail
TAG=${1:?usage: build-offline.sh IMAGE:TAG}
log() { printf 'pybox setup: %s\n' "$*" >&2; }

# The first Debian archive URI the host's apt sources name (deb822 .sources files or sources.list).
mirror_candidates() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && awk '/^URIs:/ {for (i=2;i<=NF;i++) print $i}' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' "$f"
  done
  return 0
}
mirror=$(mirror_candidates | grep -v -e security -e '-updates' | head -n 1 || true)
[ -n "$mirror" ] || { echo "pybox setup: error: no Debian mirror found in the host's apt sources" >&2; exit 1; }
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")

command -v debootstrap >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

rootfs=$(mktemp -d /var/tmp/pybox-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap $suite from the host's mirror into $rootfs (a minute or two, once)"
debootstrap --variant=minbase \
  --include=python3,python3-numpy,python3-pandas,python3-matplotlib,ca-certificates \
  "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

# Trim what a sandbox never needs: package caches and lists, docs, man pages, locales.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/* \
       "$rootfs"/usr/share/locale/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs"/usr/lib/python3* -name '__pycache__' -prune -o -name 'tests' -type d -path '*-packages/*' -prune -exec rm -rf {} + 2>/dev/null || true

log "importing the root file system as $TAG"
tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$TAG" >/dev/null
