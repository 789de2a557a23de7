#!/usr/bin/env bash
# Makes sure the `prometheus` and `promtool` binaries of the OS packages are installed, for the
# metrics tests (test/integration/prometheus.test.ts), and prints the prometheus binary's path on
# stdout (nothing else goes to stdout).
#   scripts/ensure-prometheus.sh
# Idempotent: when both binaries are there it returns at once, without apt.
#
# Unlike ensure-redis.sh it starts no server: each test starts a Prometheus of its own, on a free
# port with its own configuration and data directory, and stops it by its pid. The distribution's
# service (port 9090) is never started: the package is installed with service starts refused.
set -euo pipefail
PYBOX_SERVER_NAME=prometheus
. "$(dirname "$0")/server-lib.sh"

installed() { command -v prometheus >/dev/null && command -v promtool >/dev/null; }

if installed; then
  command -v prometheus
  exit 0
fi
is_debian_root || die "prometheus and promtool are missing. Run this script as root on Debian, or install Prometheus 2 (its prometheus and promtool binaries) on the PATH."

take_lock
if ! installed; then
  # invoke-rc.d asks policy-rc.d whether a package may start its service; 101 says no. One that is
  # already there (a container's own) is left as it is.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Written by pybox (scripts/ensure-prometheus.sh) for one install; removed after it.\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  trap '[ $made_policy = 1 ] && rm -f "$policy"' EXIT
  apt_install prometheus
fi
installed || die "the prometheus package gave no prometheus or promtool binary"
log "ready: $(prometheus --version 2>&1 | head -n 1)"
command -v prometheus
