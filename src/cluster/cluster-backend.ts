// An API node's view of the executions' side: it has no engine of its own, so what the executions
// get (runtime, image, Python) and whether they can run come from the live workers' reports in the
// registry, and from Redis answering.
import { PyboxError } from '../core/errors.ts';
import type { BackendChecks, BackendInfo, ExecutionBackend, Logger } from '../core/ports.ts';
import type { RuntimeName } from '../core/schemas.ts';
import { within } from './connection.ts';
import type { NodeDirectory } from './queue-dispatch.ts';
import { runsExecutions, type NodeReport } from './registry.ts';

export interface ClusterBackendDeps {
  registry: NodeDirectory;
  /** Redis, for a PING (the queue and the limits live there). */
  redis: { ping(): Promise<string> };
  retryAfterS: number;
  logger: Logger;
  /** How long a check may wait for Redis. */
  timeoutMs?: number | undefined;
}

export class ClusterBackend implements ExecutionBackend {
  /** The live workers as last seen, for identity(). */
  private lastWorkers: NodeReport[] = [];

  constructor(private readonly deps: ClusterBackendDeps) {}

  async describe(): Promise<BackendInfo> {
    const workers = await this.liveWorkers().catch((e: unknown) => {
      throw new PyboxError('queue_unavailable', 'the cluster registry (Redis) does not answer; retry shortly', { retryAfterS: this.deps.retryAfterS, cause: e });
    });
    const first = workers.find((w) => w.runtime) ?? workers[0];
    if (!first) throw new PyboxError('no_workers', 'no worker is alive to run executions; retry shortly', { retryAfterS: this.deps.retryAfterS });
    const runtimes = new Set<RuntimeName>();
    for (const w of workers) if (w.runtime) runtimes.add(w.runtime);
    return {
      runtime: first.runtime ?? 'runsc',
      availableRuntimes: [...runtimes].sort(),
      image: first.image ?? '',
      python: first.python ?? null,
      packages: first.packages ?? {},
    };
  }

  identity(): { runtime: RuntimeName | null; image: string } {
    const first = this.lastWorkers.find((w) => w.runtime) ?? this.lastWorkers[0];
    return { runtime: first?.runtime ?? null, image: first?.image ?? '' };
  }

  async checks(): Promise<{ checks: BackendChecks; message?: string }> {
    const timeoutMs = this.deps.timeoutMs ?? 2000;
    const queue = await within(this.deps.redis.ping(), timeoutMs, 'PING')
      .then(() => true)
      .catch(() => false);
    const workers = queue ? await this.liveWorkers().catch(() => [] as NodeReport[]) : [];
    const checks: BackendChecks = {
      engine: workers.some((w) => w.engine === true),
      image: workers.some((w) => w.imageReady === true),
      queue,
      workers: workers.length > 0,
    };
    const away: string[] = [];
    if (!queue) away.push('Redis (the queue and the limits) does not answer');
    else if (workers.length === 0) away.push('no worker is alive');
    else {
      if (!checks.engine) away.push("no worker's Docker engine answers");
      if (!checks.image) away.push('no worker has the sandbox image');
    }
    return away.length > 0 ? { checks, message: away.join('; ') } : { checks };
  }

  private async liveWorkers(): Promise<NodeReport[]> {
    const workers = (await within(this.deps.registry.nodes(), this.deps.timeoutMs ?? 2000, 'listing the workers')).filter(runsExecutions);
    this.lastWorkers = workers;
    return workers;
  }
}
