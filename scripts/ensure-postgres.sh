#!/usr/bin/env bash
# Makes sure pybox's own PostgreSQL answers on 127.0.0.1:$PYBOX_PG_PORT (default 55432), for the
# cluster mode and its tests, and prints its URL on stdout (nothing else goes to stdout).
#   scripts/ensure-postgres.sh        install (Debian packages), initialise and start when needed
#   scripts/ensure-postgres.sh stop   stop it (tests that simulate an outage)
# Idempotent: when our server already answers it returns at once, without apt.
#
# The server is a plain process owned by the `postgres` OS user, with a data directory, a log and a
# unix socket directory of its own: it never touches the distribution's cluster (port 5432).
# Durability settings stay at PostgreSQL's defaults (fsync on): it may hold real data.
set -euo pipefail
PYBOX_SERVER_NAME=postgres
. "$(dirname "$0")/server-lib.sh"

PORT=${PYBOX_PG_PORT:-55432}
valid_port "$PORT" || die "PYBOX_PG_PORT must be a port number from 1024 to 65535, not '$PORT'"
DATA=$PYBOX_STATE_DIR/postgres
SOCKDIR=/var/run/pybox-postgres
PGLOG=/var/log/pybox-postgres.log
URL="postgres://pybox:pybox@127.0.0.1:$PORT/pybox"

answers() { pg_isready -q -h 127.0.0.1 -p "$PORT" -t 3 >/dev/null 2>&1; }
# Our postmaster's pid (postmaster.pid, line 1) when it is alive.
our_pid() { live_pid "$DATA/postmaster.pid" postgres; }
# The port our postmaster listens on (postmaster.pid, line 4).
our_port() { sed -n 4p "$DATA/postmaster.pid" 2>/dev/null | tr -dc 0-9; }
ours_answers() { [ -n "$(our_pid)" ] && [ "$(our_port)" = "$PORT" ] && answers; }

# Server programs of the version the data directory was made by, else the newest installed.
bindir() {
  local v
  if [ -s "$DATA/PG_VERSION" ]; then
    v=$(tr -dc 0-9 <"$DATA/PG_VERSION")
    [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ] || die "$DATA was made by PostgreSQL $v, which is not installed"
    echo "/usr/lib/postgresql/$v/bin"
    return
  fi
  v=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
  [ -n "$v" ] && [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ] || die "no PostgreSQL server programs under /usr/lib/postgresql"
  echo "/usr/lib/postgresql/$v/bin"
}

# From / so that a working directory postgres cannot enter (root's home) draws no warnings.
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# pg_ctl signals the postmaster by the pid in its own pid file, and waits for it.
stop_postgres() { as_postgres "$(bindir)/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >&2; }
[ "${1:-}" = stop ] && stop_ours stop_postgres
[ -z "${1:-}" ] || die "usage: $0 [stop]"

# Fast path. As a non-root user the data directory is unreadable: an answer on the port is taken
# as ours.
if { [ "$(id -u)" != 0 ] && answers; } || ours_answers; then
  echo "$URL"
  exit 0
fi
is_debian_root || die "no PostgreSQL answers on 127.0.0.1:$PORT. Run this script as root on Debian, or start PostgreSQL there with a superuser pybox/pybox and a database pybox (or point PYBOX_TEST_POSTGRES_URL at one)."

take_lock
# Another run may have started it while we waited for the lock.
if ours_answers; then
  echo "$URL"
  exit 0
fi
if answers && [ -z "$(our_pid)" ]; then
  die "something else answers on 127.0.0.1:$PORT; set PYBOX_PG_PORT to a free port"
fi
if [ -n "$(our_pid)" ] && [ "$(our_port)" != "$PORT" ]; then
  die "our server runs on port $(our_port), not $PORT; run '$0 stop' first to move it"
fi

apt_install postgresql
BIN=$(bindir)

install -d -m 755 "$PYBOX_STATE_DIR"
install -d -o postgres -g postgres -m 700 "$DATA"
# /var/run is emptied at boot: the socket directory is made on every start.
install -d -o postgres -g postgres -m 700 "$SOCKDIR"
[ -e "$PGLOG" ] || install -o postgres -g postgres -m 640 /dev/null "$PGLOG"

if [ ! -s "$DATA/PG_VERSION" ]; then
  log "initialising $DATA"
  # Local (socket) connections: peer, so only the postgres OS user is its superuser there; TCP:
  # passwords (scram-sha-256). listen_addresses below keeps TCP on 127.0.0.1.
  as_postgres "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  printf "\n# pybox: its own settings, rewritten by scripts/ensure-postgres.sh on every start.\ninclude_if_exists = 'pybox.conf'\n" >>"$DATA/postgresql.conf"
  BIN=$(bindir)
fi
# Rewritten on each start, so a change here reaches an existing data directory.
as_postgres tee "$DATA/pybox.conf" >/dev/null <<'EOF'
listen_addresses = '127.0.0.1'
# Every API node and worker holds a pool; tests create many short-lived ones.
max_connections = 200
password_encryption = 'scram-sha-256'
EOF

if [ -z "$(our_pid)" ]; then
  log "starting on 127.0.0.1:$PORT (log: $PGLOG)"
  # pg_ctl detaches the postmaster (its own session), so it outlives this shell and npm.
  if ! as_postgres "$BIN/pg_ctl" start -D "$DATA" -l "$PGLOG" -w -t 60 -o "-p $PORT -k $SOCKDIR" >&2 9>&-; then
    tail -n 20 "$PGLOG" >&2 || true
    die "PostgreSQL did not start; see $PGLOG"
  fi
  record_started postgres
fi
for _ in $(seq 1 100); do
  answers && break
  sleep 0.2
done
answers || die "PostgreSQL does not answer on 127.0.0.1:$PORT; see $PGLOG"

# The role and the database, made once (re-checked on every slow start, which costs milliseconds).
as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PORT" -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pybox') THEN
    CREATE ROLE pybox LOGIN SUPERUSER PASSWORD 'pybox';
  END IF;
END
$$;
SELECT 'CREATE DATABASE pybox OWNER pybox' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'pybox')\gexec
SQL
# The URL we print must work as printed: over TCP, with the password.
PGPASSWORD=pybox psql -X -q -At "$URL" -c 'SELECT 1' >/dev/null 2>&1 || die "$URL does not accept connections"
log "ready: PostgreSQL $(PGPASSWORD=pybox psql -X -At "$URL" -c 'SHOW server_version' 2>/dev/null)"
echo "$URL"
