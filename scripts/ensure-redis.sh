#!/usr/bin/env bash
# Makes sure pybox's own Redis answers on 127.0.0.1:$PYBOX_REDIS_PORT (default 56379), for the
# cluster mode (BullMQ, limits, node registry) and its tests, and prints its URL on stdout
# (nothing else goes to stdout).
#   scripts/ensure-redis.sh        install (Debian packages) and start when needed
#   scripts/ensure-redis.sh stop   stop it (tests that simulate an outage)
# Idempotent: when our server already answers it returns at once, without apt.
#
# A plain daemon owned by the `redis` OS user (never root: a Redis client can make the server
# write files), with its own directory, config, pid file and log; the distribution's service
# (port 6379) is left alone.
set -euo pipefail
PYBOX_SERVER_NAME=redis
. "$(dirname "$0")/server-lib.sh"

PORT=${PYBOX_REDIS_PORT:-56379}
valid_port "$PORT" || die "PYBOX_REDIS_PORT must be a port number from 1024 to 65535, not '$PORT'"
DATA=$PYBOX_STATE_DIR/redis
CONF=$PYBOX_STATE_DIR/redis.conf
PIDFILE=/var/run/pybox-redis.pid
RLOG=/var/log/pybox-redis.log
URL="redis://127.0.0.1:$PORT"

cli() { timeout 5 redis-cli -h 127.0.0.1 -p "$PORT" "$@" 2>/dev/null; }
answers() { command -v redis-cli >/dev/null && [ "$(cli ping)" = PONG ]; }
our_pid() { live_pid "$PIDFILE" redis-server; }
# The server on the port is ours when its own process id is the one in our pid file.
ours_answers() {
  local pid served
  pid=$(our_pid)
  [ -n "$pid" ] && command -v redis-cli >/dev/null || return 1
  served=$(cli info server | tr -d '\r' | sed -n 's/^process_id://p')
  [ "$served" = "$pid" ]
}

# SIGTERM is Redis's orderly shutdown: the append-only file is flushed and synced first.
stop_redis() {
  kill -TERM "$1"
  wait_gone 60 "$1" || die "pid $1 did not exit within 60 s"
}
[ "${1:-}" = stop ] && stop_ours stop_redis
[ -z "${1:-}" ] || die "usage: $0 [stop]"

if ours_answers || { [ "$(id -u)" != 0 ] && answers; }; then
  echo "$URL"
  exit 0
fi
is_debian_root || die "no Redis answers on 127.0.0.1:$PORT. Run this script as root on Debian, or start Redis 7 there with maxmemory-policy noeviction (or point PYBOX_TEST_REDIS_URL at one)."

take_lock
if ours_answers; then
  echo "$URL"
  exit 0
fi
if answers; then
  die "something else answers on 127.0.0.1:$PORT; set PYBOX_REDIS_PORT to a free port"
fi
# Two servers on one data directory would each overwrite the other's append-only file.
if [ -n "$(our_pid)" ]; then
  die "our Redis (pid $(our_pid)) runs but does not answer on 127.0.0.1:$PORT (another port, or hung); run '$0 stop' first"
fi

apt_install redis-server
id redis >/dev/null 2>&1 || die "the redis-server package made no 'redis' user"

install -d -m 755 "$PYBOX_STATE_DIR"
install -d -o redis -g redis -m 750 "$DATA"
# Redis, not being root, can neither create files in /var/run and /var/log nor replace our
# config: the pid file and the log are made for it, the config stays root's.
install -o redis -g redis -m 644 /dev/null "$PIDFILE"
[ -e "$RLOG" ] || install -o redis -g redis -m 640 /dev/null "$RLOG"
cat >"$CONF.tmp" <<EOF
# Written by pybox (scripts/ensure-redis.sh) on every start; edits here are lost.
bind 127.0.0.1
port $PORT
protected-mode yes
daemonize yes
supervised no
pidfile $PIDFILE
logfile $RLOG
dir $DATA
# Every acknowledged write is in the append-only file before the reply is sent, so a restart of
# the process loses none; everysec bounds what a crash of the whole machine can lose to ~1 s.
appendonly yes
appendfsync everysec
# BullMQ's keys must never be evicted.
maxmemory-policy noeviction
# No client may move the data directory, load modules or use DEBUG.
enable-protected-configs no
enable-debug-command no
enable-module-command no
EOF
chmod 644 "$CONF.tmp"
mv "$CONF.tmp" "$CONF"

log "starting on 127.0.0.1:$PORT (log: $RLOG)"
# daemonize: the server forks into its own session and outlives this shell and npm.
(cd / && runuser -u redis -- redis-server "$CONF" 9>&-) >&2
# Loading a large append-only file answers LOADING until done; wait for PONG from our pid.
for _ in $(seq 1 300); do
  ours_answers && break
  sleep 0.1
done
if ! ours_answers; then
  tail -n 20 "$RLOG" >&2 || true
  die "Redis did not start on 127.0.0.1:$PORT; see $RLOG"
fi
record_started redis
log "ready: Redis $(cli info server | tr -d '\r' | sed -n 's/^redis_version://p')"
echo "$URL"
