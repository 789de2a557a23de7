// The composition root: read the config and environment once, build pybox, serve it, shut down
// gracefully. Nothing else in src/ reads process.env.
import type { Hono } from 'hono';
import { composeClusterNode } from './compose-cluster.ts';
import { composePybox } from './compose.ts';
import type { Config } from './config/schema.ts';
import type { Logger } from './core/ports.ts';
import type { RuntimeName } from './core/schemas.ts';
import { loadConfig } from './config/load.ts';
import { createLogger, scrub } from './core/logger.ts';
import { runtimeSummary } from './engine/runtime.ts';
import { closeServer, listen } from './server.ts';
import { storeHasKeys } from './store/tenant-store.ts';
import { checkListenAddress, LOCAL_MODE_MESSAGE } from './tenancy/listen.ts';

/** Time after the grace period for cancelling, removing sandboxes and closing, before exit(1). */
const FORCE_EXIT_AFTER_GRACE_MS = 15_000;

async function main(): Promise<void> {
  const env = process.env;
  const config = loadConfig({ path: env.PYBOX_CONFIG ?? 'config/default.yaml', env });
  const logger = createLogger(config.log.level, { format: config.log.format });
  const { host, port } = config.server;
  const node = config.cluster.postgresUrl === null ? await embeddedNode(config, logger, env) : await clusterNode(config, logger, env);
  // A slow or silent client must not hold a connection open: header and request timeouts (server.ts).
  const { server, port: bound } = await listen(node.app, host, port, config.server);
  logger.info(`pybox${node.what} listening on http://${host.includes(':') ? `[${host}]` : host}:${bound}`, node.fields);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    const graceMs = config.server.shutdownGraceMs;
    logger.info('shutting down', { signal, graceMs });
    // The sequence bounds itself; this is for an engine that stops answering in the middle of it.
    const force = setTimeout(() => {
      logger.error('shutdown did not finish in time; exiting anyway');
      process.exit(1);
    }, graceMs + FORCE_EXIT_AFTER_GRACE_MS);
    force.unref();
    node
      .shutdown(graceMs, { close: () => closeServer(server) })
      .then(() => {
        logger.info('shut down');
        process.exit(0);
      })
      .catch((e: unknown) => {
        logger.error('shutdown failed', { error: e });
        process.exit(1);
      });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

interface ServedNode {
  app: Hono;
  what: string;
  fields: Record<string, unknown>;
  shutdown(graceMs: number, listener: { close(): Promise<void> }): Promise<void>;
}

/** The all-in-one node on SQLite: what `npm start` runs with no cluster settings. */
async function embeddedNode(config: Config, logger: Logger, env: NodeJS.ProcessEnv): Promise<ServedNode> {
  // Without a key nobody is authenticated: refuse to serve that beyond loopback, before starting anything.
  const mode = checkListenAddress(config.server.host, storeHasKeys(config.store.path));
  const pybox = await composePybox(config, { dockerHost: env.DOCKER_HOST, logger });
  if (mode === 'local') logger.info(LOCAL_MODE_MESSAGE);
  else logger.info('API keys required on every route but /healthz and /readyz');
  logRuntime(config, logger, pybox.runtime, pybox.availableRuntimes);
  return { app: pybox.app, what: '', fields: { runtime: pybox.runtime, image: pybox.image, store: config.store.path }, shutdown: (g, l) => pybox.shutdown(g, l) };
}

/** A node of a cluster (api, worker or both) on PostgreSQL and Redis. */
async function clusterNode(config: Config, logger: Logger, env: NodeJS.ProcessEnv): Promise<ServedNode> {
  const node = await composeClusterNode(config, { dockerHost: env.DOCKER_HOST, logger });
  try {
    // An API node follows the same rule as the embedded one: no keys, loopback only. A worker serves
    // only its health probes, so it may listen anywhere.
    if (node.role !== 'worker') {
      const mode = checkListenAddress(config.server.host, await node.tenants.hasKeys());
      if (mode === 'local') logger.info(LOCAL_MODE_MESSAGE);
    }
  } catch (e) {
    await node.close();
    throw e;
  }
  if (node.engineSide) logRuntime(config, logger, node.engineSide.runtime, node.engineSide.availableRuntimes);
  const fields: Record<string, unknown> = { role: node.role, nodeId: node.nodeId };
  if (node.engineSide) Object.assign(fields, { runtime: node.engineSide.runtime, image: node.engineSide.image });
  return { app: node.app, what: ` ${node.role === 'all' ? 'cluster' : node.role} node`, fields, shutdown: (g, l) => node.shutdown(g, l) };
}

function logRuntime(config: Config, logger: Logger, runtime: RuntimeName, available: RuntimeName[]): void {
  const summary = runtimeSummary(config.engine.runtime, runtime, available);
  if (runtime === 'runsc' || config.engine.runtime !== 'auto') logger.info(`sandboxes run under ${summary}`);
  else logger.warn(`sandboxes run under ${summary}`);
}

main().catch((e: unknown) => {
  // Before the logger exists (a bad setting) or after it failed: plain text, scrubbed all the same.
  process.stderr.write(`pybox: ${scrub(e instanceof Error ? e.message : String(e))}\n`);
  process.exit(1);
});
