// `pybox batch FILE.jsonl`: runs every line of a JSON Lines file (one ExecutionRequest each) as one
// batch. Lines are checked here first: bad ones are reported by line number and nothing is sent.
// Progress comes from the batch's event stream; the results are written at the end, one JSON line
// per item in the order of the input lines, to --out or stdout.
import { readFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { PyboxClient } from '../../client/client.ts';
import { sleep } from '../../client/wait.ts';
import { ExecutionRequest, MAX_BATCH_ITEMS, type BatchInfo, type BatchItem } from '../../core/schemas.ts';
import type { CliContext } from '../context.ts';
import { clientFor, describeError, EXIT_SERVICE, type RemoteOptions } from '../remote.ts';
import { createProgress } from '../suite/progress.ts';

interface BatchOptions extends RemoteOptions {
  out?: string;
  label?: string;
  progress?: 'bar' | 'plain';
}

const HELP = `
Each non-empty line of FILE is one request as POST /v1/executions takes it, e.g.
  {"code": "print(sum(map(int, input().split())))", "stdin": "1 2\\n", "timeoutMs": 5000}
Lines are validated before anything is sent; bad ones are listed by line number. The batch may hold
up to the server's jobs.maxBatchItems items (${MAX_BATCH_ITEMS} at most); a larger file is refused by
the server, so split it. Results are written when the batch is done, one line per item in input
order: {"line", "index", "executionId", "status", "success", "result"}. Ctrl-C cancels the batch's
queued items.

Exit codes: 0 every item succeeded (success: true), 1 some did not, 2 the file is invalid or pybox
could not take or follow the batch, 130 interrupted (the batch was cancelled).

The server is --url or PYBOX_URL (default http://127.0.0.1:8080), the key --key or PYBOX_API_KEY.`;

/** The requests of a JSON Lines file and the 1-based line each came from, or what is wrong with which line. */
function readJsonl(text: string): { items: ExecutionRequest[]; lines: number[]; problems: string[] } {
  const items: ExecutionRequest[] = [];
  const lines: number[] = [];
  const problems: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') return;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch (e) {
      problems.push(`line ${i + 1}: not JSON: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    const checked = ExecutionRequest.safeParse(json);
    if (!checked.success) {
      for (const issue of checked.error.issues.slice(0, 3)) problems.push(`line ${i + 1}: ${issue.path.join('.') || 'request'}: ${issue.message}`);
      return;
    }
    items.push(checked.data);
    lines.push(i + 1);
  });
  return { items, lines, problems };
}

export function registerBatch(program: Command, ctx: CliContext): void {
  program
    .command('batch')
    .description('run every request of a JSON Lines file as one batch on pybox; results as JSON Lines')
    .argument('<file>', 'one ExecutionRequest per line (.jsonl)')
    .option('--out <file>', 'write the results there instead of stdout')
    .option('--label <label>', 'a name for the batch, shown back by the server')
    .option('--progress <mode>', 'bar (a live bar, the default on a terminal) or plain (a line per item)')
    .option('--url <url>', 'the pybox server (or PYBOX_URL)')
    .option('--key <key>', 'API key (or PYBOX_API_KEY)')
    .addHelpText('after', HELP)
    .action(async (file: string, opts: BatchOptions) => {
      const interrupt = new AbortController();
      const onSigint = () => interrupt.abort(new Error('interrupted'));
      process.once('SIGINT', onSigint);
      try {
        process.exitCode = await batchCommand(ctx, file, opts, interrupt.signal);
      } finally {
        process.removeListener('SIGINT', onSigint);
      }
    });
}

/** Follows the batch to its end: by its events, else (the stream lost for good) by asking every 2 s. */
async function follow(client: PyboxClient, info: BatchInfo, ctx: CliContext, onItem: (item: BatchItem) => void, signal: AbortSignal): Promise<BatchInfo> {
  try {
    for await (const event of client.batchEvents(info.id, { signal })) {
      if (event.type === 'item') onItem(event.data.item);
      else return event.data;
    }
  } catch (e) {
    if (signal.aborted) throw e;
    ctx.err(`pybox batch: lost the batch's event stream (${describeError(e)}); asking for its state instead`);
  }
  for (;;) {
    const page = await client.getBatch(info.id, { limit: 1 }, { signal });
    if (page.state !== 'running') return page;
    await sleep(2000, signal);
  }
}

export async function batchCommand(ctx: CliContext, file: string, opts: BatchOptions, signal: AbortSignal = new AbortController().signal): Promise<number> {
  if (opts.progress !== undefined && opts.progress !== 'bar' && opts.progress !== 'plain') {
    ctx.err(`pybox batch: --progress is bar or plain, not "${opts.progress}"`);
    return EXIT_SERVICE;
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    ctx.err(`pybox batch: ${e instanceof Error ? e.message : String(e)}`);
    return EXIT_SERVICE;
  }
  const { items, lines, problems } = readJsonl(text);
  if (problems.length) {
    for (const p of problems.slice(0, 20)) ctx.err(`pybox batch: ${file}: ${p}`);
    if (problems.length > 20) ctx.err(`pybox batch: … and ${problems.length - 20} more`);
    ctx.err('pybox batch: nothing was submitted');
    return EXIT_SERVICE;
  }
  if (items.length === 0) {
    ctx.err(`pybox batch: ${file} holds no requests`);
    return EXIT_SERVICE;
  }
  if (items.length > MAX_BATCH_ITEMS) {
    ctx.err(`pybox batch: ${items.length} requests is more than a batch may hold (${MAX_BATCH_ITEMS}); split the file`);
    return EXIT_SERVICE;
  }

  const client = clientFor(ctx, opts);
  let info: BatchInfo;
  try {
    info = await client.createBatch({ items, ...(opts.label ? { label: opts.label } : {}) }, { signal });
  } catch (e) {
    ctx.err(`pybox batch: the batch was refused: ${describeError(e)}`);
    return EXIT_SERVICE;
  }
  ctx.err(`pybox batch: batch ${info.id}: ${info.total} items`);

  const results = new Map<number, BatchItem>();
  const progress = createProgress(ctx, { total: items.length, unit: 'items', countsFormat: '{succeeded} succeeded, {other} not', ...(opts.progress ? { mode: opts.progress } : {}) });
  const counts = { succeeded: 0, other: 0 };
  const onItem = (item: BatchItem) => {
    if (item.state !== 'done' || !item.result || results.has(item.index)) return;
    results.set(item.index, item);
    if (item.result.success) counts.succeeded++;
    else counts.other++;
    progress.tick(`item ${item.index} (line ${lines[item.index] ?? '?'}): ${item.result.status}${item.result.success ? '' : ' ✗'}`, counts);
  };
  let final: BatchInfo;
  try {
    final = await follow(client, info, ctx, onItem, signal);
    // Items the stream did not bring (it was lost a while) are read page by page.
    if (results.size < items.length) for await (const item of client.batchItems(info.id, { pageSize: 500 }, { signal })) onItem(item);
  } catch (e) {
    progress.stop();
    if (signal.aborted) {
      try {
        const cancelled = await client.cancelBatch(info.id);
        ctx.err(`pybox batch: interrupted: batch ${info.id} cancelled with ${cancelled.done} of ${cancelled.total} items done`);
      } catch (ce) {
        ctx.err(`pybox batch: interrupted; cancelling batch ${info.id} failed: ${describeError(ce)}`);
      }
      return 130;
    }
    ctx.err(`pybox batch: cannot follow batch ${info.id}: ${describeError(e)}`);
    return EXIT_SERVICE;
  }
  progress.stop();

  const out: string[] = [];
  let allSucceeded = results.size === items.length;
  for (let index = 0; index < items.length; index++) {
    const item = results.get(index);
    const result = item?.result ?? null;
    if (!result?.success) allSucceeded = false;
    out.push(JSON.stringify({ line: lines[index], index, executionId: item?.executionId ?? null, status: result?.status ?? null, success: result?.success ?? false, result }));
  }
  const body = out.join('\n') + '\n';
  if (opts.out) {
    try {
      writeFileSync(opts.out, body);
    } catch (e) {
      ctx.err(`pybox batch: cannot write ${opts.out}: ${describeError(e)}`);
      return EXIT_SERVICE;
    }
  } else {
    for (const line of out) ctx.out(line);
  }
  const byStatus = Object.entries(final.byStatus)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${n} ${s}`)
    .join(', ');
  ctx.err(`pybox batch: batch ${final.id} ${final.state}: ${counts.succeeded} of ${items.length} succeeded${byStatus ? ` (${byStatus})` : ''}${opts.out ? `; results in ${opts.out}` : ''}`);
  return allSucceeded ? 0 : 1;
}
