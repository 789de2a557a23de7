// Progress of `pybox test` and `pybox batch` while they run, on stderr: a live bar (cli-progress)
// when stderr is a terminal, else one plain line per finished unit, which a CI log keeps readable.
import cliProgress from 'cli-progress';
import type { CliContext } from '../context.ts';

export interface Progress {
  /** One unit done; `line` is what the plain mode prints for it, `counts` what the bar shows. */
  tick(line: string, counts: Record<string, number>): void;
  stop(): void;
}

/** The bar when stderr is a terminal and CI is not set (CI logs want lines), else plain lines. */
function wantsBar(ctx: CliContext, force?: 'bar' | 'plain'): boolean {
  if (force) return force === 'bar';
  return Boolean(ctx.tty?.isTTY) && !ctx.env.CI;
}

export function createProgress(ctx: CliContext, opts: { total: number; unit: string; countsFormat: string; mode?: 'bar' | 'plain' }): Progress {
  if (!wantsBar(ctx, opts.mode) || !ctx.tty) {
    let done = 0;
    return {
      tick: (line) => ctx.err(`[${String(++done).padStart(String(opts.total).length)}/${opts.total}] ${line}`),
      stop: () => {},
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      stream: ctx.tty,
      format: `{bar} {value}/{total} ${opts.unit} | ${opts.countsFormat} | {duration_formatted}`,
      barsize: 24,
      hideCursor: true,
      clearOnComplete: false,
      fps: 8,
    },
    cliProgress.Presets.shades_classic,
  );
  let value = 0;
  // Every count starts at 0, so the first frame shows numbers rather than the format's names.
  const zero = Object.fromEntries([...opts.countsFormat.matchAll(/\{(\w+)\}/g)].map((m) => [m[1], 0]));
  bar.start(opts.total, 0, zero);
  return {
    tick: (_line, counts) => bar.update(++value, counts),
    stop: () => bar.stop(),
  };
}
