#!/usr/bin/env bash
# pybox set-up: everything `npm start` and `npm test` need, on a fresh machine or an old one.
# Idempotent; when everything is in place it returns in about a second.
#   1. Node dependencies (npm ci when package-lock.json changed since the last install)
#   2. a Docker engine that answers (installed and started on Debian as root; gVisor registered)
#   3. the sandbox image, built from images/ when its content hash has no image yet
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=node_modules/.pybox-deps
want=$(cat package.json package-lock.json | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "pybox setup: installing Node dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" >"$stamp"
fi

bash scripts/ensure-engine.sh
node --import tsx scripts/build-image.ts
