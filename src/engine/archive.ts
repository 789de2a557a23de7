// The payload sent to the runner on the container's stdin: one tar archive built in memory.
// Paths were validated at the HTTP edge (FilePath) and are checked again by the runner.
import { pack } from 'tar-stream';

export interface PayloadRequest {
  args: string[];
  env: Record<string, string>;
  context: Record<string, unknown>;
  /**
   * outputBytes: what the runner keeps of each stream of a test case (a run's own output is capped here).
   * maxOutputs, maxOutputBytes: the figures a single run returns, and the bytes of each; none when absent.
   */
  caps: { floodBytes: number; maxFiles: number; maxFileBytes: number; outputBytes: number; maxOutputs?: number; maxOutputBytes?: number };
  /** The import policy, checked on the code's syntax tree before it runs; absent when off. */
  importPolicy?: { mode: 'warn' | 'block'; dangerous: string[]; safe: string[] };
  /**
   * Test cases, in order: the runner runs the code once per case. Each case's args, stdin and files
   * travel as archive entries of their own (`.pybox/cases/<i>/args`, `.pybox/cases/<i>/stdin`,
   * `.pybox/cases/<i>/files/<path>`), never in the request the runner keeps in its memory: that
   * memory is every case process's inheritance.
   */
  tests?: Array<{ timeoutMs: number }>;
}

export interface PayloadInput {
  code: string;
  stdin: string;
  files: Array<{ path: string; data: Buffer }>;
  request: PayloadRequest;
  /** The test cases' own input, index for index with request.tests. */
  cases?: Array<{ args: string[]; stdin: string; files: Array<{ path: string; data: Buffer }> }>;
}

/** The archive entry that holds a test case's args (JSON), its stdin, or one of its files. */
export const caseEntry = (index: number, what: 'args' | 'stdin' | { file: string }): string =>
  typeof what === 'string' ? `.pybox/cases/${index}/${what}` : `.pybox/cases/${index}/files/${what.file}`;

export async function buildPayload(input: PayloadInput): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => {
    if (Buffer.isBuffer(c)) chunks.push(c);
  });
  const done = new Promise<void>((resolve, reject) => {
    tar.on('end', resolve);
    tar.on('error', reject);
  });
  const add = (name: string, data: Buffer) =>
    new Promise<void>((resolve, reject) => {
      tar.entry({ name, size: data.length, mode: 0o644, type: 'file', mtime: new Date(0) }, data, (err) =>
        err ? reject(err) : resolve(),
      );
    });
  // The request comes first so the runner knows its caps before any user file arrives.
  await add('.pybox/request.json', Buffer.from(JSON.stringify(input.request)));
  if (input.stdin.length > 0) await add('.pybox/stdin', Buffer.from(input.stdin, 'utf8'));
  await add('main.py', Buffer.from(input.code, 'utf8'));
  for (const f of input.files) await add(f.path, f.data);
  for (const [i, c] of (input.cases ?? []).entries()) {
    if (c.args.length > 0) await add(caseEntry(i, 'args'), Buffer.from(JSON.stringify(c.args)));
    if (c.stdin.length > 0) await add(caseEntry(i, 'stdin'), Buffer.from(c.stdin, 'utf8'));
    for (const f of c.files) await add(caseEntry(i, { file: f.path }), f.data);
  }
  tar.finalize();
  await done;
  return Buffer.concat(chunks);
}
