# pybox's own service image (API nodes, workers, or the all-in-one node), built offline by
# scripts/build-service-image.sh from a staged context: ./node (the host's node binary) and ./app
# (the app with its production node_modules). The base is the sandbox's own local base image
# (Debian 12), so nothing is pulled and its layers are shared with the sandbox image.
ARG BASE
FROM ${BASE}

# The service runs as this unprivileged user. A worker also needs the engine's socket: compose adds
# the socket's group to it (group_add), so it needs no root either.
RUN groupadd --system --gid 900 pybox \
 && useradd --system --uid 900 --gid 900 --home-dir /app --no-create-home --shell /usr/sbin/nologin pybox \
 && mkdir -p /data \
 && chown pybox:pybox /data

COPY node /usr/local/bin/node
COPY app /app
WORKDIR /app

# tsx keeps its transform cache under the temp dir: give the container a writable /tmp.
ENV NODE_ENV=production \
    PYBOX_CONFIG=/app/config/default.yaml \
    PYBOX_DB=/data/pybox.db \
    PYBOX_PORT=8080
EXPOSE 8080
USER 900:900
LABEL pybox.image="service"
CMD ["node", "--import", "tsx", "src/main.ts"]
