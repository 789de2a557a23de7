// A worker in a process of its own, for queue.test.ts to kill with SIGKILL mid-run. Its executions
// never finish: it prints `started <id>` when it takes one, and `ready` once it takes jobs.
import { QueueWorker } from '../../../src/cluster/queue-worker.ts';
import type { Dispatch } from '../../../src/core/ports.ts';

const url = process.env.PBQ_REDIS_URL;
const prefix = process.env.PBQ_PREFIX;
if (!url || !prefix) throw new Error('PBQ_REDIS_URL and PBQ_PREFIX are required');
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const run: Dispatch = {
  submit: (execution) => {
    process.stdout.write(`started ${execution.job.id}\n`);
    return new Promise(() => {});
  },
};
const admission = { admit: async () => ({ admitted: true, inFlight: 1 }), release: async () => {} };
const worker = new QueueWorker({ connection: url, prefix, nodeId: 'child', slots: 1, lockMs: Number(process.env.PBQ_LOCK_MS ?? 2000), run, admission, logger: quiet });
await worker.start();
process.stdout.write('ready\n');
