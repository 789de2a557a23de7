// A SessionHosts in memory for the cluster's session tests (the worker side's local sessions).
import { PyboxError } from '../../src/core/errors.ts';
import type { RuntimeName, SessionEndReason, SessionFileList } from '../../src/core/schemas.ts';
import type { HostedSession, SessionCallJob, SessionCallOutcome, SessionHosts, SessionOpen } from '../../src/core/sessions.ts';

const captured = (text: string) => ({ totalBytes: Buffer.byteLength(text), truncated: false, text: () => text });
const notFound = (id: string) => new PyboxError('not_found', `no session with id ${id}`);

/**
 * A node's local sessions, in memory: what reaches it is recorded, and a call acts on its code:
 * 'stream' writes a chunk, then the rest once streamOn() is called, 'wait' runs until interrupted, 'hang' until release(),
 * 'flood' writes more than a session's outputBytes, 'lose' loses the sandbox; anything else answers `ran <code>`.
 */
export class FakeSessionHosts implements SessionHosts {
  readonly sessions = new Map<string, HostedSession>();
  readonly files = new Map<string, Map<string, Buffer>>();
  readonly calls: Array<{ session: string; id: string; code: string }> = [];
  readonly cancelled: string[] = [];
  readonly closed: Array<{ id: string; reason: SessionEndReason }> = [];
  /** Told of a session that ended on its own (as the SessionManager's onEnded). */
  onEnded: ((s: HostedSession, reason: SessionEndReason) => void) | undefined;
  /** A 'stream' call writes its first chunk, then waits for this before the rest. */
  streamOn: () => void = () => {};
  /** Calls with code 'hang' wait for this (a worker that stopped answering). */
  release: () => void = () => {};

  async open(req: SessionOpen): Promise<HostedSession> {
    const s: HostedSession = {
      id: req.id,
      tenant: req.tenant,
      runtime: 'runc',
      limits: req.limits,
      idleTimeoutMs: req.idleTimeoutMs,
      createdAtMs: req.createdAtMs,
      lastUsedAtMs: req.createdAtMs,
      expiresAtMs: req.createdAtMs + 3_600_000,
      calls: 0,
      // The manager's own name for its node: the worker files the session under its node id.
      node: 'the-local-manager',
    };
    this.sessions.set(s.id, s);
    this.files.set(s.id, new Map(req.files.map((f) => [f.path, f.data])));
    return { ...s };
  }

  private find(id: string): HostedSession {
    const s = this.sessions.get(id);
    if (!s) throw notFound(id);
    return s;
  }

  async get(id: string): Promise<HostedSession> {
    return { ...this.find(id) };
  }

  async list(tenant?: string): Promise<HostedSession[]> {
    return [...this.sessions.values()].filter((s) => tenant === undefined || s.tenant === tenant).map((s) => ({ ...s }));
  }

  async call(id: string, job: SessionCallJob): Promise<{ outcome: SessionCallOutcome; session: HostedSession; runtime: RuntimeName }> {
    const s = this.find(id);
    s.calls++;
    this.calls.push({ session: id, id: job.id, code: job.code });
    const started = Date.now();
    const outcome = (kind: SessionCallOutcome['kind'], stdout: string, stderr = ''): SessionCallOutcome => ({
      kind,
      report: kind === 'finished' ? { v: 1, phase: 'run', exitCode: 0, signal: null, error: null, files: [], filesDropped: 0, flooded: false, cpuMs: 3, outputs: [{ type: 'text/plain', data: '42', kind: 'result' }], outputsDropped: 0 } : null,
      stdout: captured(stdout),
      stderr: captured(stderr),
      durationMs: Date.now() - started,
      stateLost: false,
      sandboxLost: false,
    });
    const done = (o: SessionCallOutcome) => ({ outcome: o, session: { ...s }, runtime: 'runc' as const });
    if (job.code === 'stream') {
      job.onOutput?.('stdout', Buffer.from('one\n'));
      await new Promise<void>((resolve) => (this.streamOn = resolve));
      job.onOutput?.('stderr', Buffer.from('two\n'));
      job.onOutput?.('stdout', Buffer.from('three\n'));
      return done(outcome('finished', 'one\nthree\n', 'two\n'));
    }
    if (job.code === 'wait') {
      job.onOutput?.('stdout', Buffer.from('waiting\n'));
      await new Promise<void>((resolve) => {
        if (job.signal?.aborted) resolve();
        job.signal?.addEventListener('abort', () => resolve(), { once: true });
      });
      this.cancelled.push(job.id);
      return done(outcome('cancelled', 'waiting\n'));
    }
    if (job.code === 'hang') {
      await new Promise<void>((resolve) => (this.release = resolve));
      return done(outcome('finished', ''));
    }
    if (job.code === 'lose') {
      // The sandbox is gone: the session ends before the call's answer, as the manager does it.
      this.sessions.delete(id);
      this.onEnded?.({ ...s }, 'failed');
      return done({ ...outcome('failed', ''), sandboxLost: true });
    }
    if (job.code === 'flood') {
      job.onOutput?.('stdout', Buffer.alloc(5000, 'x'));
      return done(outcome('finished', 'x'.repeat(1000)));
    }
    return done(outcome('finished', `ran ${job.code}\n`));
  }

  async putFiles(id: string, files: Array<{ path: string; data: Buffer }>): Promise<void> {
    this.find(id);
    const mine = this.files.get(id) as Map<string, Buffer>;
    for (const f of files) mine.set(f.path, f.data);
  }

  async getFile(id: string, path: string, maxBytes: number): Promise<Buffer> {
    this.find(id);
    const data = this.files.get(id)?.get(path);
    if (!data) throw new PyboxError('not_found', `no file ${path}`);
    if (data.length > maxBytes) throw new PyboxError('payload_too_large', `the file is larger than ${maxBytes} bytes`);
    return data;
  }

  async listFiles(id: string, max: number): Promise<SessionFileList> {
    this.find(id);
    const all = [...(this.files.get(id) ?? new Map<string, Buffer>())].map(([path, data]) => ({ path, size: data.length }));
    return { files: all.slice(0, max), truncated: all.length > max };
  }

  async close(id: string, reason: SessionEndReason): Promise<void> {
    this.find(id);
    this.sessions.delete(id);
    this.closed.push({ id, reason });
  }
}

