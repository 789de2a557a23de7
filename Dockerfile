# pybox's own service image (not the sandbox image: that one is built from images/ by setup).
# It talks to the host's Docker engine through the socket mounted by docker-compose.yml.
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY src ./src
COPY config ./config
COPY images ./images
ENV PYBOX_HOST=0.0.0.0 PYBOX_PORT=8080 PYBOX_DB=/data/pybox.db PYBOX_CONFIG=/app/config/default.yaml
EXPOSE 8080
VOLUME ["/data"]
CMD ["node", "--import", "tsx", "src/main.ts"]
