#!/usr/bin/env bash
# Makes sure a Docker engine answers, and that gVisor (runsc) is registered with it when we own it.
# Idempotent: when the engine already answers and runsc is known, it returns in well under a second.
#
# Order of preference:
#   1. DOCKER_HOST, or the default socket, already answers  -> use it as it is (we never reconfigure
#      an engine someone else started, except to register runsc when we can do so safely).
#   2. Debian host, running as root                          -> install docker.io (+ runsc) from the
#      OS package sources, register runsc, start dockerd in the background, wait until it answers.
#   3. Anything else                                         -> stop with a message saying what to do.
set -euo pipefail

log() { printf 'pybox setup: %s\n' "$*" >&2; }
die() { printf 'pybox setup: error: %s\n' "$*" >&2; exit 1; }

SOCK=/var/run/docker.sock
DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_LOG=/var/log/pybox-dockerd.log
WANT_RUNSC=${PYBOX_INSTALL_RUNSC:-1}

engine_answers() { timeout 5 docker info >/dev/null 2>&1; }
engine_has_runsc() { timeout 5 docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; }
is_debian_root() { [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; }

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "installing ${missing[*]} from the OS package sources"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Writes runsc into daemon.json, keeping whatever else is there. gVisor needs --network=none here:
# without it every start fails with "cannot run with network enabled in root network namespace".
register_runsc() {
  mkdir -p /etc/docker
  python3 - "$DAEMON_JSON" <<'PY'
import json, os, sys
path = sys.argv[1]
cfg = {}
if os.path.exists(path):
    with open(path) as f:
        text = f.read().strip()
        cfg = json.loads(text) if text else {}
runtimes = cfg.setdefault("runtimes", {})
want = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}
if runtimes.get("runsc") != want:
    runtimes["runsc"] = want
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=2)
    os.replace(tmp, path)
    print("changed")
PY
}

wait_for_engine() {
  for _ in $(seq 1 120); do
    engine_answers && return 0
    sleep 0.5
  done
  return 1
}

# docker-compose validates the deployment file (docker-compose.yml); cheap, and only when missing.
if is_debian_root; then apt_install docker-compose || log "docker-compose could not be installed (only the deployment-file check needs it)"; fi

if engine_answers; then
  if [ "$WANT_RUNSC" = 1 ] && ! engine_has_runsc && is_debian_root && [ -z "${DOCKER_HOST:-}" ] && pgrep -x dockerd >/dev/null; then
    apt_install runsc
    if [ "$(register_runsc)" = changed ] || ! engine_has_runsc; then
      log "registering runsc with the running engine (SIGHUP)"
      pkill -HUP -x dockerd || true
      sleep 1
    fi
  fi
  exit 0
fi

if [ -n "${DOCKER_HOST:-}" ]; then
  die "DOCKER_HOST=$DOCKER_HOST does not answer. Start that engine, or unset DOCKER_HOST to use the local socket."
fi

if ! is_debian_root; then
  die "no Docker engine answers at $SOCK. Install and start Docker (https://docs.docker.com/engine/install/), make sure your user can reach the socket, then run this again."
fi

pkgs=(docker.io)
[ "$WANT_RUNSC" = 1 ] && pkgs+=(runsc)
apt_install "${pkgs[@]}"
[ "$WANT_RUNSC" = 1 ] && register_runsc >/dev/null

if ! pgrep -x dockerd >/dev/null; then
  log "starting dockerd (log: $DOCKERD_LOG)"
  # setsid + nohup: the engine must outlive this shell, the npm process and the test run.
  setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
fi
wait_for_engine || die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
log "engine ready: $(docker version --format 'Docker {{.Server.Version}}' 2>/dev/null)"
