// What a CLI command may use of the outside world, handed in so commands stay testable.
export interface CliContext {
  env: Record<string, string | undefined>;
  out(line: string): void;
  err(line: string): void;
}
