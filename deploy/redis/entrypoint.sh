#!/bin/sh
# Serves Redis for pybox: password required ($REDIS_PASSWORD), append-only persistence in /data,
# and no eviction (BullMQ's jobs and pybox's counters must never be dropped to make room: a full
# Redis refuses writes instead, and pybox answers 503). Arguments are passed on to redis-server.
set -eu
: "${REDIS_PASSWORD:?must be set}"
printf '%s' "$REDIS_PASSWORD" | grep -Eq '^[A-Za-z0-9._~-]{16,}$' || {
  echo "pybox-redis: REDIS_PASSWORD must be at least 16 characters of A-Z a-z 0-9 . _ ~ - (openssl rand -hex 24 makes one)" >&2
  exit 1
}
# The password goes in a file, not on the command line where ps would show it.
conf=$(mktemp)
cat >"$conf" <<CONF
bind * -::*
port 6379
protected-mode no
requirepass $REDIS_PASSWORD
dir /data
appendonly yes
appendfsync everysec
maxmemory-policy noeviction
CONF
exec redis-server "$conf" "$@"
