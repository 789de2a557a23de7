// The executions' side of a node with its own engine: the runtime it was composed with, the
// Python and packages of its image (probed once by running a small program), and readiness from
// the engine itself.
import type { ConcurrencyGate } from './concurrency.ts';
import type { BackendChecks, BackendInfo, EngineProbe, ExecutionBackend, Logger, Sandboxes } from './ports.ts';
import { codeJob } from './sandbox.ts';
import type { LimitSet } from '../config/schema.ts';
import type { RuntimeName } from './schemas.ts';

const PROBE_CODE = `import sys, json, importlib.metadata as m
pk = {}
for n in ("numpy", "pandas", "matplotlib"):
    try:
        pk[n] = m.version(n)
    except Exception:
        pass
print(json.dumps({"python": sys.version.split()[0], "packages": pk}))`;

const PROBE_TIMEOUT_MS = 30_000;

export interface LocalBackendDeps {
  engine: EngineProbe;
  sandboxes: Sandboxes;
  gate: ConcurrencyGate;
  image: string;
  runtime: RuntimeName;
  availableRuntimes: RuntimeName[];
  /** The limits the probe runs with: the server's defaults, its time within the server's maximum. */
  defaults: LimitSet;
  maxTimeoutMs: number;
  logger: Logger;
  newId: () => string;
}

export class LocalBackend implements ExecutionBackend {
  private probe: Promise<{ python: string | null; packages: Record<string, string> }> | undefined;

  constructor(private readonly deps: LocalBackendDeps) {}

  async describe(opts: { signal?: AbortSignal } = {}): Promise<BackendInfo> {
    this.probe ??= this.probePython(opts.signal).catch((e: unknown) => {
      this.probe = undefined; // try again on the next call
      this.deps.logger.warn('could not probe the sandbox image', { error: e });
      return { python: null, packages: {} };
    });
    const { python, packages } = await this.probe;
    return { runtime: this.deps.runtime, availableRuntimes: this.deps.availableRuntimes, image: this.deps.image, python, packages };
  }

  identity(): { runtime: RuntimeName; image: string } {
    return { runtime: this.deps.runtime, image: this.deps.image };
  }

  async checks(): Promise<{ checks: BackendChecks; message?: string }> {
    const engine = await this.deps.engine.ping();
    const image = engine ? await this.deps.engine.imageExists(this.deps.image).catch(() => false) : false;
    const checks = { engine, image };
    if (!engine) return { checks, message: 'the Docker engine does not answer' };
    if (!image) return { checks, message: `the sandbox image ${this.deps.image} is missing: run \`npm run setup\`` };
    return { checks };
  }

  private async probePython(signal: AbortSignal | undefined): Promise<{ python: string | null; packages: Record<string, string> }> {
    const { defaults } = this.deps;
    const limits = { timeoutMs: Math.min(PROBE_TIMEOUT_MS, this.deps.maxTimeoutMs), memoryMb: defaults.memoryMb, cpus: defaults.cpus };
    const job = codeJob({ id: `probe-${this.deps.newId()}`, image: this.deps.image, runtime: this.deps.runtime, code: PROBE_CODE, limits, signal });
    const outcome = await this.deps.gate.run(() => this.deps.sandboxes.run(job), { signal });
    const parsed = JSON.parse(outcome.stdout.text().trim()) as { python?: unknown; packages?: unknown };
    const packages: Record<string, string> = {};
    if (parsed.packages && typeof parsed.packages === 'object') {
      for (const [k, v] of Object.entries(parsed.packages)) if (typeof v === 'string') packages[k] = v;
    }
    return { python: typeof parsed.python === 'string' ? parsed.python : null, packages };
  }
}
