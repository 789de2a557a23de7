// The shutdown sequence, in one place (compose.ts wires the real parts; main.ts and tests run it):
// 1. stop accepting work: new executions get shutting_down (503), readiness says so, executions
//    still waiting for a slot are cancelled;
// 2. let running executions finish within the grace period;
// 3. then cancel the rest (their sandboxes are stopped, they are recorded as cancelled);
// 4. close the listener (its clients have their answers by then), then remove every sandbox
//    (drains: pool, runner) and close what is left (engine, store).
// An idle service goes through it without waiting for anything.
import type { Logger } from './ports.ts';

/** What shutdown needs of the execution service. */
export interface Drainable {
  /** Executions accepted and not yet recorded. */
  readonly pending: number;
  stopAccepting(): void;
  cancelRunning(): void;
  /** Resolves once every accepted execution is recorded. */
  settled(): Promise<void>;
}

export interface ShutdownParts {
  service: Drainable;
  /** The HTTP listener, when there is one: stops listening and ends its connections. */
  listener?: { close(): Promise<void> } | undefined;
  /** Run in order once no execution is left: each removes what it still holds. */
  drains: ReadonlyArray<() => Promise<void>>;
  /** Run last, in order. */
  closers: ReadonlyArray<() => void | Promise<void>>;
  logger: Logger;
}

/** Resolves true if `p` settles within `ms` (never for an infinite `ms`: it just waits), else false. */
function within(p: Promise<void>, ms: number): Promise<boolean> {
  if (!Number.isFinite(ms)) return p.then(() => true);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, ms));
    timer.unref();
  });
  return Promise.race([p.then(() => true), late]).finally(() => clearTimeout(timer));
}

/**
 * Shuts the service down: running executions get `graceMs` to finish (Infinity: as long as they
 * take), then are cancelled. Resolves once every sandbox is removed and the store is closed.
 */
export async function shutdown(parts: ShutdownParts, graceMs: number): Promise<void> {
  const { service, logger } = parts;
  service.stopAccepting();
  if (service.pending > 0) {
    logger.info('waiting for running executions to finish', { executions: service.pending, graceMs });
    if (!(await within(service.settled(), graceMs))) {
      logger.warn('cancelling the executions still running after the grace period', { executions: service.pending });
      service.cancelRunning();
      await service.settled();
    }
  }
  if (parts.listener) await parts.listener.close();
  for (const drain of parts.drains) await drain();
  for (const close of parts.closers) await close();
}
