#!/usr/bin/env bash
# Builds every image the compose deployment uses, with no container registry, and records their
# tags in an env file docker-compose reads:
#   pybox-service:<tag>   scripts/build-service-image.sh (also builds the sandbox image when missing)
#   pybox-postgres:<tag>  the local Debian base + Debian's postgresql-15
#   pybox-redis:<tag>     the local Debian base + Debian's redis-server
# The PostgreSQL and Redis packages come from the mirror the host's own apt sources name, fetched
# inside `docker build`. Each image is skipped when its tag exists, so a second run takes seconds.
#
# Usage: deploy/build-images.sh [--env-file FILE]   (default: deploy/.env)
# The env file gets the image tags, the engine socket's group and the owner of the secrets directory
# (replaced on every run) and, the first time only, random passwords for PostgreSQL and Redis; any
# other line in it is kept. The secrets directory (PYBOX_SECRETS_DIR, default deploy/secrets) is
# made, mode 700, when missing: the first API key is written there (docker-compose.yml, first-key).
#
# Environment: PYBOX_BUILD_NETWORK (default host): the network the apt steps of the builds use.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPLOY=$ROOT/deploy
log() { printf 'pybox build-images: %s\n' "$*" >&2; }
die() { printf 'pybox build-images: error: %s\n' "$*" >&2; exit 1; }

ENV_FILE=$DEPLOY/.env
while [ $# -gt 0 ]; do
  case "$1" in
    --env-file) ENV_FILE=${2:?--env-file needs a path}; shift 2 ;;
    *) die "unknown argument: $1 (usage: deploy/build-images.sh [--env-file FILE])" ;;
  esac
done
# The engine's default bridge can be missing or cut off from the outside (it is on the machine this
# was written on: docker0 does not exist); the host's own network reaches the mirror the host's apt
# uses. Only our own apt steps run during these builds.
NETWORK=${PYBOX_BUILD_NETWORK:-host}
SOCKET=${PYBOX_DOCKER_SOCKET:-/var/run/docker.sock}

service=$(bash "$ROOT/scripts/build-service-image.sh")
base=$(docker image inspect "$service" --format '{{index .Config.Labels "pybox.base"}}')
[ -n "$base" ] || die "$service carries no pybox.base label"

# The host's Debian archive and security archive, read from its apt sources (deb822 .sources files
# or one-line .list files), never named here.
apt_uris() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && awk '/^URIs:/ {for (i=2;i<=NF;i++) print $i}' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' "$f"
  done
  return 0
}
# Only Debian's own archives: other vendors' repositories need keys the base does not have.
mirror=$(apt_uris | grep -E '/debian/?$' | head -n 1 || true)
security=$(apt_uris | grep -E '/debian-security/?$' | head -n 1 || true)
[ -n "$mirror" ] || die "no Debian archive found in the host's apt sources"
suite=$(docker run --rm --network none "$base" sh -c '. /etc/os-release && echo "$VERSION_CODENAME"')
[ -n "$suite" ] || die "cannot tell the Debian release of $base"
apt_sources="deb $mirror $suite main
deb $mirror $suite-updates main"
[ -z "$security" ] || apt_sources="$apt_sources
deb $security $suite-security main"

# An apt proxy of the host's, if any: Docker knows these build arguments without an ARG line and
# keeps them out of the image's history.
proxy_args=()
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -z "${!v:-}" ] || proxy_args+=(--build-arg "$v=${!v}")
done

# Builds deploy/<name> FROM the base when pybox-<name>:<hash of base and that directory> is missing.
build_server_image() {
  local name=$1 dir=$DEPLOY/$1 tag image buildlog
  tag=$(
    {
      printf 'base %s\n' "$base"
      (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -c1-12
  )
  image="pybox-$name:$tag"
  if docker image inspect "$image" >/dev/null 2>&1; then
    log "$image is present"
  else
    log "building $image FROM $base (packages from $mirror, build network $NETWORK)"
    buildlog=$(mktemp)
    DOCKER_BUILDKIT=0 docker build -q --force-rm --network "$NETWORK" "${proxy_args[@]}" \
      --build-arg "BASE=$base" --build-arg "APT_SOURCES=$apt_sources" \
      --label "pybox.base=$base" -t "$image" "$dir" >/dev/null 2>"$buildlog" || {
      tail -n 30 "$buildlog" >&2
      rm -f "$buildlog"
      die "docker build of $image failed (a build container must reach $mirror; try PYBOX_BUILD_NETWORK)"
    }
    rm -f "$buildlog"
    log "$image is ready"
  fi
  printf '%s\n' "$image"
}
postgres=$(build_server_image postgres)
redis=$(build_server_image redis)

gid=$(stat -c %g "$SOCKET" 2>/dev/null) || die "no engine socket at $SOCKET (PYBOX_DOCKER_SOCKET)"

# Rewrites KEY=VALUE in the env file, keeping every other line.
set_env() {
  local key=$1 value=$2 tmp
  tmp=$(mktemp "$ENV_FILE.XXXXXX")
  { grep -v -E "^$key=" "$ENV_FILE" || true; printf '%s=%s\n' "$key" "$value"; } >"$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$ENV_FILE"
}
has_env() { grep -q -E "^$1=." "$ENV_FILE"; }
umask 077
[ -f "$ENV_FILE" ] || printf '# Written by deploy/build-images.sh; docker-compose reads it. Keep it secret: it holds passwords.\n' >"$ENV_FILE"

# Where first-key writes the first API key: as docker-compose will see it (its shell wins over the
# env file), relative paths from the compose file's directory. first-key runs as the directory's
# owner, so the key file belongs to whoever owns the directory and is readable by nobody else.
secrets=${PYBOX_SECRETS_DIR:-$(sed -n 's/^PYBOX_SECRETS_DIR=//p' "$ENV_FILE" | tail -n 1)}
secrets=${secrets:-./secrets}
case "$secrets" in /*) ;; *) secrets=$DEPLOY/$secrets ;; esac
[ -d "$secrets" ] || mkdir -p -m 700 "$secrets" || die "cannot make the secrets directory $secrets"
set_env PYBOX_SERVICE_IMAGE "$service"
set_env PYBOX_POSTGRES_IMAGE "$postgres"
set_env PYBOX_REDIS_IMAGE "$redis"
set_env PYBOX_DOCKER_GID "$gid"
set_env PYBOX_SECRETS_OWNER "$(stat -c %u:%g "$secrets")"
has_env PYBOX_PG_PASSWORD || set_env PYBOX_PG_PASSWORD "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
has_env PYBOX_REDIS_PASSWORD || set_env PYBOX_REDIS_PASSWORD "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
log "image tags, the socket's group ($gid) and the secrets directory's owner written to $ENV_FILE"
log "the first API key will be in $secrets/admin.key after the first docker-compose up"
printf '%s\n' "$service" "$postgres" "$redis"
