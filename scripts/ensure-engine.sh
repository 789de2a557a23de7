#!/usr/bin/env bash
# Makes sure a Docker engine answers, and that gVisor (runsc) is registered with it when we own it.
# Idempotent: when the engine already answers and runsc is in place, it returns in well under a
# second without calling apt.
#
# Order of preference:
#   1. DOCKER_HOST, or the default socket, already answers  -> use it as it is (we never reconfigure
#      an engine someone else started, except to install and register runsc when we can do so safely).
#   2. Debian host, running as root                          -> install docker.io (+ runsc) from the
#      OS package sources, register runsc, start dockerd in the background, wait until it answers.
#   3. Anything else                                         -> stop with a message saying what to do.
#
# runsc comes from the release's backports suite (Debian 12: 20240729 against the release's
# 20221219), added for that one package with the mirror the host's apt sources already use; when
# backports cannot be had, from the release itself. PYBOX_RUNSC_BACKPORTS=0 keeps the release's.
set -euo pipefail

log() { printf 'pybox setup: %s\n' "$*" >&2; }
die() { printf 'pybox setup: error: %s\n' "$*" >&2; exit 1; }

SOCK=/var/run/docker.sock
DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_LOG=/var/log/pybox-dockerd.log
WANT_RUNSC=${PYBOX_INSTALL_RUNSC:-1}
# gVisor from the release's backports suite (20 months newer than the release's own), unless 0.
WANT_BACKPORTS=${PYBOX_RUNSC_BACKPORTS:-1}
BACKPORTS_LIST=/etc/apt/sources.list.d/pybox-backports.sources
BACKPORTS_PIN=/etc/apt/preferences.d/pybox-backports
# Present when backports could not be had: the release's own runsc is then accepted without asking apt again.
BACKPORTS_MISSING=/var/lib/pybox/runsc-backports-unavailable

# The engine on the default socket, by its default pid file: a second engine (scripts/ensure-engine-b.sh)
# is also named dockerd, so a lookup by name would find, signal or wait for the wrong one.
first_dockerd_pid() {
  local pid
  pid=$(head -n 1 /var/run/docker.pid 2>/dev/null | tr -dc 0-9) || true
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && echo "$pid"
  return 0
}
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

# The first Debian archive URI the host's own apt sources name (as images/base/build-offline.sh reads it).
debian_mirror() {
  local f
  {
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] && [ "$f" != "$BACKPORTS_LIST" ] && awk '/^URIs:/ {for (i=2;i<=NF;i++) print $i}' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] && awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' "$f"
    done
  } | grep -v -e security -e '-updates' | head -n 1 || true
}

runsc_version() { dpkg-query -W -f='${Version}' runsc 2>/dev/null || true; }

# True when runsc needs no apt call: the backports build is installed, or backports was tried and
# could not be had (the release's own is then kept), or backports is not wanted and runsc is there.
runsc_settled() {
  local v
  v=$(runsc_version)
  [ -n "$v" ] || return 1
  case "$v" in *bpo*) return 0 ;; esac
  [ "$WANT_BACKPORTS" != 1 ] || [ -f "$BACKPORTS_MISSING" ]
}

# Adds the backports suite of this release for the runsc package only: every other package keeps
# coming from the release (backports is NotAutomatic; the pin says so explicitly as well).
add_backports_suite() {
  local mirror codename
  mirror=$(debian_mirror)
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$mirror" ] && [ -n "$codename" ] || return 1
  cat >"$BACKPORTS_LIST" <<EOF
# Added by pybox (scripts/ensure-engine.sh) for gVisor (runsc) only.
Types: deb
URIs: $mirror
Suites: $codename-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  mkdir -p /etc/apt/preferences.d
  cat >"$BACKPORTS_PIN" <<EOF
# Added by pybox (scripts/ensure-engine.sh): from $codename-backports, runsc only.
Package: *
Pin: release n=$codename-backports
Pin-Priority: 1

Package: runsc
Pin: release n=$codename-backports
Pin-Priority: 500
EOF
  echo "$codename"
}

# Installs the newest runsc the OS packages offer: the backports build, else the release's own.
# Prints "changed" when the installed version changed.
ensure_runsc() {
  runsc_settled && return 0
  local before codename
  before=$(runsc_version)
  if [ "$WANT_BACKPORTS" = 1 ] && codename=$(add_backports_suite); then
    log "apt-get update (with $codename-backports, for runsc)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    apt_updated=1
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t "$codename-backports" runsc >/dev/null 2>&1 &&
      case "$(runsc_version)" in *bpo*) true ;; *) false ;; esac; then
      log "runsc $(runsc_version) installed from $codename-backports"
    else
      log "runsc could not be had from $codename-backports; using the release's own"
      rm -f "$BACKPORTS_LIST" "$BACKPORTS_PIN"
      mkdir -p "$(dirname "$BACKPORTS_MISSING")"
      : >"$BACKPORTS_MISSING"
      apt_updated=0
    fi
  fi
  apt_install runsc
  [ "$(runsc_version)" = "$before" ] || echo changed
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
  if [ "$WANT_RUNSC" = 1 ] && is_debian_root && [ -z "${DOCKER_HOST:-}" ] && [ -n "$(first_dockerd_pid)" ]; then
    # Each new container runs /usr/bin/runsc afresh, so a new build applies to new containers at
    # once; the SIGHUP re-reads daemon.json (registration) and is harmless otherwise.
    replaced=$(ensure_runsc)
    if [ "$(register_runsc)" = changed ] || [ "$replaced" = changed ] || ! engine_has_runsc; then
      log "registering runsc with the running engine (SIGHUP)"
      kill -HUP "$(first_dockerd_pid)" 2>/dev/null || true
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

apt_install docker.io
if [ "$WANT_RUNSC" = 1 ]; then
  ensure_runsc >/dev/null
  register_runsc >/dev/null
fi

if [ -z "$(first_dockerd_pid)" ]; then
  log "starting dockerd (log: $DOCKERD_LOG)"
  # setsid + nohup: the engine must outlive this shell, the npm process and the test run.
  setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
fi
wait_for_engine || die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
log "engine ready: $(docker version --format 'Docker {{.Server.Version}}' 2>/dev/null)"
