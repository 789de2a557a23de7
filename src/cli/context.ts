// What a CLI command may use of the outside world, handed in so commands stay testable.
export interface CliContext {
  env: Record<string, string | undefined>;
  out(line: string): void;
  err(line: string): void;
  /** Writes text as it is, without a newline (a program's own output); out/err with the newline trimmed when absent. */
  write?(stream: 'out' | 'err', text: string): void;
  /** The terminal behind stderr, when there is one: live progress is drawn there. */
  tty?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** The standard input, for `--stdin -`. */
  stdin?: NodeJS.ReadableStream;
}

/** Writes text as it is on the command's stdout or stderr. */
export function writeRaw(ctx: CliContext, stream: 'out' | 'err', text: string): void {
  if (text === '') return;
  if (ctx.write) return ctx.write(stream, text);
  (stream === 'out' ? ctx.out : ctx.err)(text.endsWith('\n') ? text.slice(0, -1) : text);
}
