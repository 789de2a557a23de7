# Shared by scripts/ensure-postgres.sh, ensure-redis.sh and ensure-engine-b.sh (sourced, not run).
# Each of those starts one server as a plain process (no systemd), idempotently: stdout carries
# only the server's URL, every message goes to stderr.

# Set by the sourcing script before its first message.
PYBOX_SERVER_NAME=${PYBOX_SERVER_NAME:-server}
PYBOX_STATE_DIR=/var/lib/pybox

log() { printf 'pybox %s: %s\n' "$PYBOX_SERVER_NAME" "$*" >&2; }
die() { printf 'pybox %s: error: %s\n' "$PYBOX_SERVER_NAME" "$*" >&2; exit 1; }

is_debian_root() { [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; }

# A TCP port from the environment: digits only, since it ends up in config files and command lines.
valid_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && [ "$1" -ge 1024 ] && [ "$1" -le 65535 ]; }

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  # Several set-ups may run at once (one per checkout): wait for dpkg's lock instead of failing.
  local wait=(-o DPkg::Lock::Timeout=300)
  if [ $apt_updated = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" update -qq >/dev/null
    apt_updated=1
  fi
  log "installing ${missing[*]} from the OS package sources"
  DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Serialises the slow path of one script across concurrent runs (two checkouts' `npm test` at
# once). The lock lives on fd 9, under a root-owned directory (not a world-writable one, where
# another user could plant a symlink). Daemons started while it is held must get `9>&-`, or they
# would keep it for their whole life.
take_lock() {
  mkdir -p "$PYBOX_STATE_DIR"
  chmod 755 "$PYBOX_STATE_DIR"
  exec 9>"$PYBOX_STATE_DIR/.$PYBOX_SERVER_NAME.lock"
  flock -w 600 9 || die "another run has held $PYBOX_STATE_DIR/.$PYBOX_SERVER_NAME.lock for 10 minutes"
}

# True while process $1 exists and has not exited. A daemon's parent is PID 1, which may take
# seconds to reap it: a zombie counts as gone.
alive() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# The process id in pid file $1 when that process is alive and its name is $2; empty otherwise
# (a pid file left by a crash may name a pid since reused by something else).
live_pid() {
  local pid
  pid=$(head -n 1 "$1" 2>/dev/null | tr -dc 0-9) || true
  if [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; then echo "$pid"; fi
  return 0
}

# Waits (up to $1 seconds) until process $2 has exited.
wait_gone() {
  local _
  for _ in $(seq 1 $(($1 * 10))); do
    alive "$2" || return 0
    sleep 0.1
  done
  return 1
}

# The `stop` subcommand of every ensure script: finds our server by its own pid (our_pid, defined by
# the script) and hands the pid to the script's stopping function ($1). Never by name.
stop_ours() {
  [ "$(id -u)" = 0 ] || die "stopping needs root"
  local pid
  pid=$(our_pid)
  if [ -z "$pid" ]; then
    log "not running"
    exit 0
  fi
  log "stopping (pid $pid)"
  "$1" "$pid"
  exit 0
}

# A caller that stops afterwards what it started (the test suite, `npm run cluster`) names a ledger
# in PYBOX_STARTED_LEDGER: a server this script starts (not one it found running) is written there.
record_started() {
  [ -n "${PYBOX_STARTED_LEDGER:-}" ] || return 0
  mkdir -p "$(dirname "$PYBOX_STARTED_LEDGER")"
  echo "$1" >>"$PYBOX_STARTED_LEDGER"
}
