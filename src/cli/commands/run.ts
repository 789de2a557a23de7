// `pybox run main.py`: runs one program in a pybox sandbox as if it ran here. Its stdout and stderr
// are written to ours as they came, and its exit code is ours; what only a sandbox can do to a
// program (time or memory limit, output flood) gets a message on stderr and an exit code of its
// own. --json prints the whole result instead.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { DEFAULT_CLIENT_TIMEOUT_MS } from '../../client/client.ts';
import type { ExecutionResult, ExecutionStatus } from '../../core/schemas.ts';
import { ExecutionRequest } from '../../core/schemas.ts';
import { writeRaw, type CliContext } from '../context.ts';
import { clientFor, collect, describeError, EXIT_SERVICE, inputFileFrom, parseFileSpec, parseWholeNumber, type RemoteOptions } from '../remote.ts';

/** The exit code for each way a run can end that is not the program's own exit. */
const RUN_EXIT_CODES = {
  /** A syntax error or a refused import: Python exits 1 for a SyntaxError too. */
  validation_failed: 1,
  timeout: 124,
  output_limit: 125,
  cancelled: 130,
  oom: 137,
  internal_error: EXIT_SERVICE,
} as const satisfies Partial<Record<ExecutionStatus, number>>;

interface RunOptions extends RemoteOptions {
  stdin?: string;
  arg?: string[];
  file?: string[];
  timeout?: number;
  memory?: number;
  json?: boolean;
}

/** The exit code of a result: the program's own when it ended by itself, else the status's. */
export function exitCodeOf(result: ExecutionResult): number {
  if (result.status === 'completed') return result.exitCode ?? 0;
  if (result.status === 'error') return result.exitCode !== null && result.exitCode !== 0 ? result.exitCode : 1;
  return RUN_EXIT_CODES[result.status];
}

/** What a sandbox did to the program, in one line for stderr; null when the program ended by itself. */
function endMessage(result: ExecutionResult): string | null {
  switch (result.status) {
    case 'timeout':
      return `pybox: the program was stopped at its time limit (${result.limits.timeoutMs} ms)`;
    case 'oom':
      return `pybox: the program was stopped: out of memory (limit ${result.limits.memoryMb} MB)`;
    case 'output_limit':
      return `pybox: the program was stopped: it wrote more output than the sandbox allows`;
    case 'cancelled':
      return 'pybox: the run was cancelled';
    case 'internal_error':
      return `pybox: the sandbox failed (not the program's fault): ${result.error?.message ?? 'internal error'}`;
    default:
      return null;
  }
}

/** A syntax error or a refused import as Python would show it, when the sandbox gave no stderr. */
function validationText(result: ExecutionResult): string {
  const e = result.error;
  if (!e) return 'pybox: the program could not be run\n';
  const where = e.line !== null ? `  File "main.py", line ${e.line}\n` : '';
  const source = e.text ? `    ${e.text.replace(/\n$/, '')}\n${e.caret ? `    ${e.caret.replace(/\n$/, '')}\n` : ''}` : '';
  return `${where}${source}${e.type}: ${e.message}\n`;
}

function readStdin(ctx: CliContext, spec: string): Promise<string> {
  if (spec !== '-') return Promise.resolve(readFileSync(spec, 'utf8'));
  const input = ctx.stdin ?? process.stdin;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    input.on('data', (c: Buffer | string) => chunks.push(typeof c === 'string' ? Buffer.from(c) : c));
    input.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    input.on('error', reject);
  });
}

const HELP_EXIT_CODES = `
Exit codes:
  the program's own      it ran and exited by itself (an uncaught exception: 1)
  1                      syntax error or refused import (validation_failed)
  124                    stopped at its time limit (timeout)
  125                    stopped for writing more output than allowed (output_limit)
  130                    cancelled
  137                    out of memory (oom)
  2                      pybox could not run it: bad options, server unreachable or refusing, internal error

The server is --url or PYBOX_URL (default http://127.0.0.1:8080), the key --key or PYBOX_API_KEY.`;

export function registerRun(program: Command, ctx: CliContext): void {
  program
    .command('run')
    .description('run a Python program in a pybox sandbox: its stdout, stderr and exit code as if it ran here')
    .argument('<file>', 'the program (sent as main.py)')
    .option('--stdin <file>', 'file given as standard input (- for this command\'s own stdin)')
    .option('--arg <value>', 'an argument (sys.argv[1:]); repeat for more', collect)
    .option('--file <path[=name]>', 'a local file given to the program, under name (default its base name); repeat for more', collect)
    .option('--timeout <ms>', 'time limit in milliseconds', parseWholeNumber('--timeout', 1))
    .option('--memory <mb>', 'memory limit in MB', parseWholeNumber('--memory', 1))
    .option('--json', 'print the whole result as JSON instead of the program\'s output')
    .option('--url <url>', 'the pybox server (or PYBOX_URL)')
    .option('--key <key>', 'API key (or PYBOX_API_KEY)')
    .addHelpText('after', HELP_EXIT_CODES)
    .action(async (file: string, opts: RunOptions) => {
      process.exitCode = await runCommand(ctx, file, opts);
    });
}

export async function runCommand(ctx: CliContext, file: string, opts: RunOptions): Promise<number> {
  let request: ExecutionRequest;
  try {
    const raw = {
      code: readFileSync(file, 'utf8'),
      ...(opts.stdin !== undefined ? { stdin: await readStdin(ctx, opts.stdin) } : {}),
      ...(opts.arg?.length ? { args: opts.arg } : {}),
      ...(opts.file?.length ? { files: opts.file.map((spec) => parseFileSpec(spec)).map(({ local, name }) => inputFileFrom(local, name)) } : {}),
      ...(opts.timeout !== undefined ? { timeoutMs: opts.timeout } : {}),
      ...(opts.memory !== undefined ? { memoryMb: opts.memory } : {}),
    };
    const checked = ExecutionRequest.safeParse(raw);
    if (!checked.success) {
      for (const issue of checked.error.issues.slice(0, 10)) ctx.err(`pybox run: ${issue.path.join('.') || 'request'}: ${issue.message}`);
      return EXIT_SERVICE;
    }
    request = checked.data;
  } catch (e) {
    ctx.err(`pybox run: ${e instanceof Error ? e.message : String(e)}`);
    return EXIT_SERVICE;
  }

  const timeoutMs = Math.max(DEFAULT_CLIENT_TIMEOUT_MS, (request.timeoutMs ?? 0) + 60_000);
  let result: ExecutionResult;
  try {
    result = await clientFor(ctx, opts, { timeoutMs }).execute(request);
  } catch (e) {
    ctx.err(`pybox run: ${describeError(e)}`);
    return EXIT_SERVICE;
  }

  if (opts.json) {
    ctx.out(JSON.stringify(result, null, 2));
    return exitCodeOf(result);
  }
  writeRaw(ctx, 'out', result.stdout);
  writeRaw(ctx, 'err', result.stderr);
  if (result.status === 'validation_failed' && result.stderr === '') writeRaw(ctx, 'err', validationText(result));
  if (result.truncated.stdout || result.truncated.stderr) {
    const which = [result.truncated.stdout && 'stdout', result.truncated.stderr && 'stderr'].filter(Boolean).join(' and ');
    ctx.err(`pybox: ${which} cut at ${result.limits.outputBytes} bytes`);
  }
  const message = endMessage(result);
  if (message) ctx.err(message);
  return exitCodeOf(result);
}
