// The background side of a node that takes requests (the embedded node, and cluster nodes of role
// api or all): async executions and batches kept in the store and run beside interactive runs (the
// JobRunner), their HTTP face (the BatchService), and the webhooks called when they finish (the
// WebhookDeliverer). compose.ts and compose-cluster.ts build it the same way from their own stores.
import { randomUUID } from 'node:crypto';
import type { Config } from './config/schema.ts';
import { BatchService, webhookUrlCheckFrom } from './core/batch-service.ts';
import type { DefaultExecutionService } from './core/execution-service.ts';
import { JobRunner, tenantCallers } from './core/job-runner.ts';
import type { Clock, ExecutionStore, Logger, TenantStore, WebhookOutbox } from './core/ports.ts';
import type { ResultDeps } from './core/results.ts';
import type { JobStores } from './store/open.ts';
import { AddressPolicy } from './webhooks/address-policy.ts';
import { WebhookDeliverer } from './webhooks/deliverer.ts';

export interface JobsSide {
  batches: BatchService;
  runner: JobRunner;
  deliverer: WebhookDeliverer;
  /** Requeues what this node held before a restart, then starts claiming jobs and deliveries. */
  start(): Promise<void>;
  /** Stops claiming at once (before the service stops accepting: nothing new is taken). */
  stopClaiming(): void;
  /** Waits for the jobs this node runs to be recorded or given back, and for webhook calls in flight. */
  drain(): Promise<void>;
}

export interface JobsSideDeps {
  stores: JobStores;
  store: ExecutionStore;
  tenants: Pick<TenantStore, 'tenant'>;
  service: DefaultExecutionService;
  /** For the results recorded without a run (a job that cannot run, a batch item cancelled by DELETE). */
  results: ResultDeps;
  clock: Clock;
  logger: Logger;
  /** The owner of this node's leases: the same across its restarts, different from every other node's. */
  owner: string;
}

export function composeJobsSide(config: Config, deps: JobsSideDeps): JobsSide {
  const { stores, store, service, results, clock, logger, owner } = deps;
  const policy = new AddressPolicy(config.webhooks);
  const deliverer = new WebhookDeliverer({
    outbox: stores.outbox,
    secrets: stores.secrets,
    policy,
    config: config.webhooks,
    clock,
    logger,
    owner,
  });
  // A delivery queued here is tried at once, not at the deliverer's next poll.
  const outbox: WebhookOutbox = {
    enqueue: async (d, nowMs) => {
      await stores.outbox.enqueue(d, nowMs);
      deliverer.wake();
    },
    claimDue: (...a) => stores.outbox.claimDue(...a),
    delivered: (...a) => stores.outbox.delivered(...a),
    failed: (...a) => stores.outbox.failed(...a),
    get: (id) => stores.outbox.get(id),
  };
  const callerFor = tenantCallers(deps.tenants);
  const runner = new JobRunner({ jobs: stores.jobs, store, service, outbox, clock, logger, owner, config: config.jobs, callerFor, results });
  const screen = (raw: string) => {
    const why = policy.screen(raw);
    return why === null ? ({ ok: true } as const) : ({ ok: false, reason: why } as const);
  };
  const batches = new BatchService({
    jobs: stores.jobs,
    runner,
    service,
    callerFor,
    store,
    results,
    clock,
    logger,
    newId: randomUUID,
    owner,
    config: config.jobs,
    checkWebhookUrl: webhookUrlCheckFrom(screen),
  });
  return {
    batches,
    runner,
    deliverer,
    async start() {
      await runner.start();
      deliverer.start();
    },
    stopClaiming: () => runner.stop(),
    async drain() {
      runner.stop();
      await runner.settled();
      await deliverer.stop();
    },
  };
}
