// What an MCP tool call tells its host while it runs, when the host asked for progress (a
// progressToken): the code's output as it is written, each piece a `notifications/progress` whose
// message is the text, and between them a heartbeat ("running for N s") so that a host that gives
// up on a quiet call after its own timeout keeps waiting. Output is gathered for a short window
// (and per stream) before it is sent: a program that prints a character at a time is a few
// notifications, not thousands. `progress` only ever goes up, as MCP requires of it.

/** How long output is gathered before it is sent on, at most. */
export const OUTPUT_NOTIFY_MS = 100;

export interface ProgressParams {
  progress: number;
  message: string;
  /** Which stream an output message is from. */
  _meta?: { 'pybox/stream': 'stdout' | 'stderr' };
}

export class CallProgress {
  private progress = 0;
  private pending: { stream: 'stdout' | 'stderr'; text: string } | null = null;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Settles once every notification sent so far has been handed to the transport. */
  private sent: Promise<unknown> = Promise.resolve();

  constructor(
    /** Sends one notification; must not reject (a host that went away hears nothing). */
    private readonly send: (params: ProgressParams) => Promise<void>,
    private readonly windowMs: number = OUTPUT_NOTIFY_MS,
  ) {}

  /** The periodic heartbeat: the time so far (its progress is at least the seconds elapsed). */
  heartbeat(elapsedS: number): void {
    if (this.closed) return;
    this.flush();
    this.progress = Math.max(this.progress + 1, elapsedS);
    this.track(this.send({ progress: this.progress, message: `running for ${elapsedS} s` }));
  }

  output(stream: 'stdout' | 'stderr', text: string): void {
    if (this.closed || text === '') return;
    if (this.pending && this.pending.stream !== stream) this.flush();
    if (this.pending) this.pending.text += text;
    else this.pending = { stream, text };
    this.timer ??= setTimeout(() => this.flush(), this.windowMs);
  }

  /**
   * Sends the output gathered so far and takes no more. Resolves once every notification is with
   * the transport: the result must go after them, for a host forgets a call's progress handler
   * once it has the result (and would drop the last output with it).
   */
  close(): Promise<unknown> {
    this.flush();
    this.closed = true;
    return this.sent;
  }

  private track(p: Promise<void>): void {
    this.sent = Promise.all([this.sent, p.catch(() => {})]);
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    this.progress += 1;
    this.track(this.send({ progress: this.progress, message: p.text, _meta: { 'pybox/stream': p.stream } }));
  }
}
