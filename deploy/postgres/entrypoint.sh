#!/bin/sh
# First start: makes a cluster in $PGDATA with an application role ($POSTGRES_USER, password
# $POSTGRES_PASSWORD) that owns the database $POSTGRES_DB and is no superuser. The superuser,
# postgres, logs in only over the container's own socket (peer). Every start: serves on all
# addresses with password (SCRAM) authentication; arguments are passed on to postgres (-c name=value).
set -eu
die() { echo "pybox-postgres: $*" >&2; exit 1; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?must be set (the application role's password)}"
  # The password goes into a URL and the names into SQL: keep both to characters neither needs quoted.
  printf '%s' "$POSTGRES_PASSWORD" | grep -Eq '^[A-Za-z0-9._~-]{16,}$' \
    || die "POSTGRES_PASSWORD must be at least 16 characters of A-Z a-z 0-9 . _ ~ - (openssl rand -hex 24 makes one)"
  for name in "$POSTGRES_USER" "$POSTGRES_DB"; do
    printf '%s' "$name" | grep -Eq '^[a-z_][a-z0-9_]{0,62}$' || die "role and database names must be lower-case identifiers, not '$name'"
  done
  [ "$POSTGRES_USER" != postgres ] || die "POSTGRES_USER must not be the superuser, postgres"
  echo "pybox-postgres: creating a cluster in $PGDATA" >&2
  initdb -D "$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  # A server on the container's own socket only, while the role and database are made; psql quotes
  # the names and the password itself (:"name", :'value').
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -s start
  psql -X -q -v ON_ERROR_STOP=1 -U postgres -d postgres \
    -v user="$POSTGRES_USER" -v db="$POSTGRES_DB" -v password="$POSTGRES_PASSWORD" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"user";
SQL
  pg_ctl -D "$PGDATA" -m fast -w -s stop
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c password_encryption=scram-sha-256 "$@"
