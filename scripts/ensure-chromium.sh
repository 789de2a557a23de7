#!/usr/bin/env bash
# Makes sure Chromium from the OS packages is installed, for the browser tests (test/browser), which
# drive it headless with playwright-core, and prints its path on stdout (nothing else goes to stdout).
#   scripts/ensure-chromium.sh
# Idempotent: when the binary is there it returns at once, without apt. It starts nothing: each
# browser test launches a browser of its own and closes it.
# PYBOX_CHROMIUM names another binary (a Chrome or Chromium installed some other way); it is used as
# it is. What was installed here is written to the ledger (PYBOX_STARTED_LEDGER) as `chromium`.
set -euo pipefail
PYBOX_SERVER_NAME=chromium
. "$(dirname "$0")/server-lib.sh"

BIN=${PYBOX_CHROMIUM:-/usr/bin/chromium}
works() { [ -x "$BIN" ] && timeout 30 "$BIN" --version >/dev/null 2>&1; }

if works; then
  echo "$BIN"
  exit 0
fi
[ -z "${PYBOX_CHROMIUM:-}" ] || die "PYBOX_CHROMIUM=$BIN is not a Chromium that runs ($BIN --version failed)"
is_debian_root || die "Chromium is missing. Run this script as root on Debian, or install Chromium and set PYBOX_CHROMIUM to its binary."

take_lock
if ! works; then
  apt_install chromium
  record_started chromium
fi
works || die "the chromium package gave no working $BIN"
log "ready: $("$BIN" --version 2>/dev/null | head -n 1)"
echo "$BIN"
