#!/usr/bin/env bash
# pybox set-up: everything `npm start` and `npm test` need, on a fresh machine or an old one.
# Idempotent; when everything is in place it returns in about a second.
#   1. Node dependencies (npm ci when package-lock.json changed since the last install)
#   2. a Docker engine that answers (installed and started on Debian as root; gVisor registered)
#   3. the sandbox image, built from images/ when its content hash has no image yet
#   4. the web pages (playground, API reference) in build/web, rebuilt when their sources changed
# `setup.sh test` (npm's pretest) also starts what the cluster tests need: PostgreSQL, Redis and a
# second Docker engine (scripts/ensure-*.sh), and installs the Prometheus binaries the metrics tests
# run (scripts/ensure-prometheus.sh), xmllint for the JUnit reports (scripts/ensure-xmllint.sh) and
# Chromium for the browser tests (scripts/ensure-chromium.sh).
# `npm start` does not: the all-in-one node needs none.
#   PYBOX_TEST_POSTGRES_URL / PYBOX_TEST_REDIS_URL set: that server is used as it is, not started.
#   PYBOX_SECOND_ENGINE=0: no second engine (its tests are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
case "$mode" in
  "" | test) ;;
  *) echo "usage: $0 [test]" >&2; exit 2 ;;
esac

stamp=node_modules/.pybox-deps
want=$(cat package.json package-lock.json | sha256sum | cut -c1-16)
if [ -L node_modules ]; then
  # Another checkout's install, shared through a symlink (a git worktree): npm ci here would
  # empty it under that checkout and every other one sharing it. It is that checkout's to update.
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "pybox setup: node_modules is shared ($(readlink node_modules)) and was installed for another package.json/package-lock.json; not reinstalling it" >&2
  fi
elif [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "pybox setup: installing Node dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" >"$stamp"
fi

bash scripts/ensure-engine.sh
node --import tsx scripts/build-image.ts
node --import tsx scripts/build-web.ts

if [ "$mode" = test ]; then
  # What these start (not what was already running) the suite's global teardown stops again.
  export PYBOX_STARTED_LEDGER=/var/lib/pybox/test-started
  # Their URLs (stdout) are for callers that want them; the tests know them (test/support/servers.ts).
  [ -n "${PYBOX_TEST_POSTGRES_URL:-}" ] || bash scripts/ensure-postgres.sh >/dev/null
  [ -n "${PYBOX_TEST_REDIS_URL:-}" ] || bash scripts/ensure-redis.sh >/dev/null
  [ "${PYBOX_SECOND_ENGINE:-1}" = 0 ] || bash scripts/ensure-engine-b.sh >/dev/null
  # The binaries only: each metrics test starts a Prometheus of its own.
  bash scripts/ensure-prometheus.sh >/dev/null
  # The CLI tests validate `pybox test --junit` reports with it.
  bash scripts/ensure-xmllint.sh >/dev/null
  # The browser tests (test/browser) drive it headless.
  bash scripts/ensure-chromium.sh >/dev/null
fi
