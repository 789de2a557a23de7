#!/usr/bin/env bash
# Makes sure a second Docker engine ("engine b") answers beside the first, with the current sandbox
# image loaded, and prints its socket URL on stdout (nothing else goes to stdout). Cluster tests run
# a worker on each engine, as two hosts would.
#   scripts/ensure-engine-b.sh        start it (and copy the image in) when needed
#   scripts/ensure-engine-b.sh stop   stop it
# Idempotent: when it answers and has the image, it returns in well under a second.
#
# Everything of its own: data root, exec root (and so its own containerd), pid file, socket,
# containerd namespaces, config file (never /etc/docker/daemon.json, the first engine's). No
# bridge and no iptables rules: sandboxes have no network, and the first engine's rules stay as
# they are. The first engine is never stopped, reconfigured or signalled here.
set -euo pipefail
PYBOX_SERVER_NAME=engine-b
. "$(dirname "$0")/server-lib.sh"
ROOT=$(cd "$(dirname "$0")/.." && pwd)

SOCK=/var/run/docker-b.sock
HOST=unix://$SOCK
PIDFILE=/var/run/docker-b.pid
DATA_ROOT=/var/lib/docker-b
EXEC_ROOT=/var/run/docker-b
CONFIG=$PYBOX_STATE_DIR/docker-b.json
DLOG=/var/log/pybox-dockerd-b.log

docker_b() { DOCKER_HOST=$HOST docker "$@"; }
answers() { [ -S "$SOCK" ] && DOCKER_HOST=$HOST timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
# Only a dockerd started with our pid file is ours to stop: never the first engine.
our_pid() {
  local pid
  pid=$(live_pid "$PIDFILE" dockerd)
  [ -n "$pid" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--pidfile $PIDFILE " && echo "$pid"
  return 0
}

stop_dockerd() {
  kill -TERM "$1"
  wait_gone 60 "$1" || die "dockerd (pid $1) did not exit within 60 s; see $DLOG"
}
[ "${1:-}" = stop ] && stop_ours stop_dockerd
[ -z "${1:-}" ] || die "usage: $0 [stop]"

# The sandbox image of this checkout's images/, as scripts/build-image.ts names it for the first
# engine (PYBOX_SANDBOX_IMAGE overrides, e.g. for a checkout without node_modules).
tag=${PYBOX_SANDBOX_IMAGE:-$(cd "$ROOT" && node --import tsx --input-type=module \
  -e "import { imageTags } from './src/engine/image.ts'; process.stdout.write(imageTags('images').sandbox)")}
[[ $tag =~ ^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9_.-]+$ ]] || die "not an image tag: '$tag'"
has_image() { docker_b image inspect "$tag" >/dev/null 2>&1; }

if answers && has_image; then
  echo "$HOST"
  exit 0
fi
is_debian_root || die "no Docker engine answers at $HOST. Run this script as root on Debian (or set PYBOX_SECOND_ENGINE=0 to skip what needs a second engine)."

take_lock
if ! answers; then
  apt_install docker.io
  [ -z "$(our_pid)" ] || die "dockerd (pid $(our_pid)) holds $PIDFILE but does not answer at $HOST; see $DLOG"
  # gVisor needs --network=none in its runtime arguments here (see docs: machine facts).
  if [ -x /usr/bin/runsc ]; then
    printf '{\n  "runtimes": {\n    "runsc": { "path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"] }\n  }\n}\n' >"$CONFIG.tmp"
  else
    printf '{}\n' >"$CONFIG.tmp"
  fi
  mv "$CONFIG.tmp" "$CONFIG"
  log "starting dockerd at $HOST (log: $DLOG)"
  # setsid + nohup: the engine must outlive this shell, npm and the test run.
  setsid nohup dockerd --config-file "$CONFIG" \
    --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" -H "$HOST" \
    --bridge none --iptables=false --ip-masq=false \
    --containerd-namespace mobyb --containerd-plugins-namespace pluginsb \
    >"$DLOG" 2>&1 </dev/null 9>&- &
  for _ in $(seq 1 120); do
    answers && break
    sleep 0.5
  done
  answers || { tail -n 20 "$DLOG" >&2 || true; die "dockerd did not answer at $HOST within 60 s; see $DLOG"; }
  record_started engine-b
  log "ready: Docker $(docker_b version --format '{{.Server.Version}}' 2>/dev/null), runtimes: $(docker_b info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>/dev/null)"
fi

if ! has_image; then
  if ! docker image inspect "$tag" >/dev/null 2>&1; then
    [ -z "${PYBOX_SANDBOX_IMAGE:-}" ] || die "$tag is on neither engine"
    log "$tag is not on the first engine either: building it there"
    (cd "$ROOT" && node --import tsx scripts/build-image.ts)
  fi
  log "copying $tag from the first engine (docker save | docker load)"
  start=$(date +%s)
  docker save "$tag" | docker_b load -q >/dev/null
  has_image || die "$tag did not arrive on $HOST"
  log "copied $tag in $(($(date +%s) - start)) s"
fi
echo "$HOST"
