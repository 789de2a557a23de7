#!/usr/bin/env bash
# Builds pybox's own service image, pybox-service:<tag>, with no container registry: FROM the local
# sandbox base image (pybox-base:<hash of images/base>), the host's own node binary, the app and
# its production node_modules staged from the local install. The tag is a hash of everything that
# goes in, so a build is skipped when an image of that tag exists. Prints the tag on stdout (and
# only that; progress goes to stderr).
#
# The sandbox image (pybox-python:<hash of images/>) and its base are built first when missing, by
# the same script setup uses: a worker started from this image looks for that exact tag.
#
# Environment: NODE_BIN (default: the node on PATH; it must run on the base's glibc, Debian 12),
#              PYBOX_SERVICE_REPOSITORY (default pybox-service).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf 'pybox build-service-image: %s\n' "$*" >&2; }
die() { printf 'pybox build-service-image: error: %s\n' "$*" >&2; exit 1; }

REPOSITORY=${PYBOX_SERVICE_REPOSITORY:-pybox-service}
NODE_BIN=$(readlink -f "${NODE_BIN:-$(command -v node)}")
[ -x "$NODE_BIN" ] || die "no node binary at ${NODE_BIN:-(none on PATH)}"
# npm writes its record of the install last: without it the install is missing or still under way.
[ -f node_modules/.package-lock.json ] || die "node_modules is missing or incomplete (no node_modules/.package-lock.json): install the dependencies first (npm ci)"
timeout 10 docker info >/dev/null 2>&1 || die "no Docker engine answers (scripts/ensure-engine.sh starts one)"

# The sandbox image and its base, built only when missing (seconds when both exist).
node --import tsx scripts/build-image.ts >&2
# The web pages (playground, reference) the API nodes serve, built here as set-up builds them.
node --import tsx scripts/build-web.ts >&2
base=$(node --import tsx --input-type=module -e \
  "import { imageTags } from './src/engine/image.ts'; process.stdout.write(imageTags('images').base)")
docker image inspect "$base" >/dev/null 2>&1 || die "the base image $base is missing after scripts/build-image.ts"

# Everything that decides the image's content, in a fixed order. node_modules is represented by
# npm's own record of what is installed there (it changes whenever the install does).
inputs=(package.json package-lock.json node_modules/.package-lock.json deploy/service.Dockerfile scripts/build-service-image.sh)
tag=$(
  {
    printf 'base %s\nnode %s\n' "$base" "$("$NODE_BIN" --version)"
    sha256sum "$NODE_BIN" | cut -d' ' -f1
    find src bin config images build/web -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum "${inputs[@]}"
  } | sha256sum | cut -c1-12
)
image="$REPOSITORY:$tag"
if docker image inspect "$image" >/dev/null 2>&1; then
  log "$image is present"
  printf '%s\n' "$image"
  exit 0
fi

# Not under /tmp or /var/tmp: the security battery watches those for files a sandbox might leave.
mkdir -p /var/lib/pybox/stage
stage=$(mktemp -d /var/lib/pybox/stage/pybox-service.XXXXXX)
trap 'rm -rf "$stage"' EXIT
log "staging the app and its production dependencies in $stage"
mkdir -p "$stage/app"
cp -a package.json package-lock.json src bin config images "$stage/app/"
mkdir -p "$stage/app/build" && cp -a build/web "$stage/app/build/web"
install -m 755 "$NODE_BIN" "$stage/node"
# A copy of the local install, pruned of dev dependencies: npm needs no network for that, and the
# native better-sqlite3 built for this machine (same Debian release as the base) comes along.
# -L: the worktree's node_modules may be a symlink to the shared install.
cp -a -L node_modules "$stage/app/node_modules"
(cd "$stage/app" && npm prune --omit=dev --offline --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
# Build output that is not needed to run (better-sqlite3's object files and sources).
rm -rf "$stage/app/node_modules/better-sqlite3/build/Release/obj" "$stage/app/node_modules/better-sqlite3/build/Release/.deps" \
       "$stage/app/node_modules/better-sqlite3/deps" "$stage/app/node_modules/better-sqlite3/src"
cp deploy/service.Dockerfile "$stage/Dockerfile"
# Readable by the image's unprivileged user, writable by nobody but root, whatever the checkout's umask.
chmod -R a+rX,go-w "$stage"

log "building $image FROM $base"
# The classic builder: no buildx plugin is needed, and FROM a local image never pulls. --force-rm:
# a failed step leaves no container behind.
DOCKER_BUILDKIT=0 docker build -q --force-rm --network none --build-arg "BASE=$base" \
  --label "pybox.base=$base" --label "pybox.node=$("$NODE_BIN" --version)" \
  -t "$image" "$stage" >/dev/null
log "$image is ready"
printf '%s\n' "$image"
