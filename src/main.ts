// The composition root: read the config and environment once, build pybox, serve it, shut down
// gracefully. Nothing else in src/ reads process.env.
import { composePybox } from './compose.ts';
import { loadConfig } from './config/load.ts';
import { createLogger } from './core/logger.ts';
import { runtimeSummary } from './engine/runtime.ts';
import { closeServer, listen } from './server.ts';
import { storeHasKeys } from './store/tenant-store.ts';
import { checkListenAddress, LOCAL_MODE_MESSAGE } from './tenancy/listen.ts';

/** Time after the grace period for cancelling, removing sandboxes and closing, before exit(1). */
const FORCE_EXIT_AFTER_GRACE_MS = 15_000;

async function main(): Promise<void> {
  const env = process.env;
  const config = loadConfig({ path: env.PYBOX_CONFIG ?? 'config/default.yaml', env });
  const logger = createLogger(config.log.level);
  // Without a key nobody is authenticated: refuse to serve that beyond loopback, before starting anything.
  const { host, port } = config.server;
  const mode = checkListenAddress(host, storeHasKeys(config.store.path));
  const pybox = await composePybox(config, { dockerHost: env.DOCKER_HOST, logger });
  if (mode === 'local') logger.info(LOCAL_MODE_MESSAGE);
  else logger.info('API keys required on every route but /healthz and /readyz');
  const summary = runtimeSummary(config.engine.runtime, pybox.runtime, pybox.availableRuntimes);
  if (pybox.runtime === 'runsc' || config.engine.runtime !== 'auto') logger.info(`sandboxes run under ${summary}`);
  else logger.warn(`sandboxes run under ${summary}`);
  // A slow or silent client must not hold a connection open: header and request timeouts (server.ts).
  const { server, port: bound } = await listen(pybox.app, host, port, config.server);
  logger.info(`pybox listening on http://${host.includes(':') ? `[${host}]` : host}:${bound}`, {
    runtime: pybox.runtime,
    image: pybox.image,
    store: config.store.path,
  });

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
    pybox
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

main().catch((e: unknown) => {
  process.stderr.write(`pybox: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
