// `pybox <command>`: the command-line entry. Each command lives in commands/<name>.ts and registers
// itself on the program; this file only wires them up with the process's environment and streams.
import { Command } from 'commander';
import type { CliContext } from './context.ts';
import { registerServe } from './commands/serve.ts';
import { registerKeys } from './commands/keys.ts';
import { registerMcp } from './commands/mcp.ts';
import { registerDoctor } from './commands/doctor.ts';
import { registerCluster } from './commands/cluster.ts';
import { registerRun } from './commands/run.ts';
import { registerTest } from './commands/test.ts';
import { registerBatch } from './commands/batch.ts';

const ctx: CliContext = {
  env: process.env,
  out: (line) => process.stdout.write(line + '\n'),
  err: (line) => process.stderr.write(line + '\n'),
  write: (stream, text) => (stream === 'out' ? process.stdout : process.stderr).write(text),
  tty: process.stderr,
  get stdin() {
    return process.stdin;
  },
};

const program = new Command('pybox').description('pybox: hardened Python sandboxes behind an HTTP API');
program.showHelpAfterError();
registerServe(program, ctx);
registerKeys(program, ctx);
registerMcp(program, ctx);
registerDoctor(program, ctx);
registerCluster(program, ctx);
registerRun(program, ctx);
registerTest(program, ctx);
registerBatch(program, ctx);

program.parseAsync(process.argv).catch((e: unknown) => {
  ctx.err(`pybox: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
