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
  const entries: Array<[string, Buffer]> = [];
  // The request comes first so the runner knows its caps before any user file arrives.
  entries.push(['.pybox/request.json', Buffer.from(JSON.stringify(input.request))]);
  if (input.stdin.length > 0) entries.push(['.pybox/stdin', Buffer.from(input.stdin, 'utf8')]);
  entries.push(['main.py', Buffer.from(input.code, 'utf8')]);
  for (const f of input.files) entries.push([f.path, f.data]);
  for (const [i, c] of (input.cases ?? []).entries()) {
    if (c.args.length > 0) entries.push([caseEntry(i, 'args'), Buffer.from(JSON.stringify(c.args))]);
    if (c.stdin.length > 0) entries.push([caseEntry(i, 'stdin'), Buffer.from(c.stdin, 'utf8')]);
    for (const f of c.files) entries.push([caseEntry(i, { file: f.path }), f.data]);
  }
  return packTar(entries);
}

/** What a session's runner is started with (pybox_runner/session.py). */
export interface SessionPayloadRequest {
  session: true;
  env: Record<string, string>;
  caps: { floodBytes: number; outputBytes: number; maxOutputs: number; maxOutputBytes: number; interruptGraceMs: number };
}

/**
 * A session's payload: an archive holding its request only. The runner reads it to its last block
 * and then reads frames; the session's files follow as a PUT frame (filesArchive).
 */
export function buildSessionPayload(request: SessionPayloadRequest): Promise<Buffer> {
  return packTar([['.pybox/request.json', Buffer.from(JSON.stringify(request))]]);
}

/** Files for a session's work directory, as a PUT frame carries them. */
export function filesArchive(files: Array<{ path: string; data: Buffer }>): Promise<Buffer> {
  return packTar(files.map((f) => [f.path, f.data]));
}

async function packTar(entries: Array<[string, Buffer]>): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => {
    if (Buffer.isBuffer(c)) chunks.push(c);
  });
  const done = new Promise<void>((resolve, reject) => {
    tar.on('end', resolve);
    tar.on('error', reject);
  });
  for (const [name, data] of entries) {
    await new Promise<void>((resolve, reject) => {
      tar.entry({ name, size: data.length, mode: 0o644, type: 'file', mtime: new Date(0) }, data, (err) => (err ? reject(err) : resolve()));
    });
  }
  tar.finalize();
  await done;
  return Buffer.concat(chunks);
}
