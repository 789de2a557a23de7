#!/usr/bin/env bash
# Makes sure `xmllint` (Debian's libxml2-utils) is installed, for the tests that validate the JUnit
# reports of `pybox test` against test/fixtures/junit/junit.xsd, and prints its path on stdout.
#   scripts/ensure-xmllint.sh
# Idempotent: when the binary is there it returns at once, without apt.
set -euo pipefail
PYBOX_SERVER_NAME=xmllint
. "$(dirname "$0")/server-lib.sh"

if command -v xmllint >/dev/null; then
  command -v xmllint
  exit 0
fi
is_debian_root || die "xmllint is missing. Run this script as root on Debian, or install libxml2's xmllint on the PATH."
take_lock
command -v xmllint >/dev/null || apt_install libxml2-utils
command -v xmllint >/dev/null || die "the libxml2-utils package gave no xmllint binary"
log "ready: $(xmllint --version 2>&1 | head -n 1)"
command -v xmllint
