// `pybox serve`: the same as `npm start` without the set-up step.
import type { Command } from 'commander';
import type { CliContext } from '../context.ts';

export function registerServe(program: Command, _ctx: CliContext): void {
  program
    .command('serve')
    .description('serve the HTTP API (settings from PYBOX_CONFIG and the PYBOX_* environment)')
    .action(async () => {
      await import('../../main.ts');
    });
}
