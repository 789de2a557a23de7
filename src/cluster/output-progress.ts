// A streamed execution's output on its way from the worker that runs it to the API node whose client
// waits: as BullMQ job progress, which the queue's event stream carries to every API node's
// QueueEvents. A worker batches the chunks into short time windows, so a flood of small writes is a
// handful of Redis commands rather than one per write; both sides cap each stream at the
// execution's outputBytes, and the receiving side parses what came out of Redis as hostile.
import { z } from 'zod';
import type { OutputListener } from '../core/sandbox.ts';
import { BASE64 } from '../core/results.ts';

/** How long a worker gathers output before it sends it on: the delay a streaming client sees, at most. */
export const OUTPUT_WINDOW_MS = 100;
/** A batch is sent at once when it holds this much, whatever the window. */
export const OUTPUT_BATCH_BYTES = 64 * 1024;
/** Nor does a batch hold more chunks than this (stdout and stderr written in turn make many small ones). */
const OUTPUT_BATCH_CHUNKS = 1000;

const STREAMS = ['stdout', 'stderr'] as const;
type Stream = (typeof STREAMS)[number];

/** A batch's base64 is at most this long (the batch size, plus one chunk that crossed it, as base64). */
const MAX_BATCH_BASE64 = Math.ceil((2 * OUTPUT_BATCH_BYTES + 1024 * 1024) / 3) * 4;

/**
 * A job's progress holding output: stdout and stderr chunks in the order they were written (s: 0
 * stdout, 1 stderr). Its one key tells it from any other progress a job might report.
 */
export const OutputProgress = z.strictObject({
  pyboxOutput: z
    .array(z.tuple([z.union([z.literal(0), z.literal(1)]), z.string().refine((s) => s.length % 4 === 0 && BASE64.test(s), 'must be base64')]))
    .max(OUTPUT_BATCH_CHUNKS)
    .refine((chunks) => chunks.reduce((n, [, b]) => n + b.length, 0) <= MAX_BATCH_BASE64, 'too much output in one batch'),
});
export type OutputProgress = z.infer<typeof OutputProgress>;

export interface OutputBatcherOptions {
  /** Sends one batch (job.updateProgress); batches are sent one after the other, in order. */
  send: (progress: OutputProgress) => Promise<unknown>;
  /** Bytes of each stream sent at most (the execution's outputBytes). */
  capBytes: number;
  /** A batch that could not be sent: the result still carries the output, so it is only reported. */
  onError: (e: unknown) => void;
  windowMs?: number;
  batchBytes?: number;
}

/** The worker's side: takes the sandbox's chunks, sends them in batches. */
export class OutputBatcher {
  private pending: Array<[0 | 1, Buffer]> = [];
  private pendingBytes = 0;
  private readonly sent = { stdout: 0, stderr: 0 };
  private timer: NodeJS.Timeout | undefined;
  /** The batches sent so far, chained: each waits for the one before (the order is the output's). */
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly opts: OutputBatcherOptions) {}

  /** The sandbox's listener: never throws. */
  readonly listener: OutputListener = (stream, data) => {
    if (this.closed) return;
    const room = this.opts.capBytes - this.sent[stream];
    if (room <= 0 || data.length === 0) return;
    const part = data.length <= room ? data : data.subarray(0, room);
    this.sent[stream] += part.length;
    const s = stream === 'stdout' ? 0 : 1;
    const last = this.pending.at(-1);
    // Consecutive writes to one stream travel as one chunk.
    if (last && last[0] === s) last[1] = Buffer.concat([last[1], part]);
    else this.pending.push([s, Buffer.from(part)]);
    this.pendingBytes += part.length;
    if (this.pendingBytes >= (this.opts.batchBytes ?? OUTPUT_BATCH_BYTES) || this.pending.length >= OUTPUT_BATCH_CHUNKS) this.sendPending();
    else this.timer ??= setTimeout(() => this.sendPending(), this.opts.windowMs ?? OUTPUT_WINDOW_MS);
  };

  /** Sends what is left and resolves once every batch has been sent (or failed); takes no more output. */
  flush(): Promise<void> {
    this.closed = true;
    this.sendPending();
    return this.chain;
  }

  private sendPending(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const progress: OutputProgress = { pyboxOutput: this.pending.map(([s, b]) => [s, b.toString('base64')]) };
    this.pending = [];
    this.pendingBytes = 0;
    this.chain = this.chain.then(() => this.opts.send(progress)).then(
      () => {},
      (e: unknown) => this.opts.onError(e),
    );
  }
}

/**
 * The API node's side for one execution: hands the chunks of each progress event on, as long as
 * each stream stays within the cap. Anything that is not output progress is ignored.
 */
export class OutputReceiver {
  private readonly heard = { stdout: 0, stderr: 0 };

  constructor(
    private readonly listener: OutputListener,
    private readonly capBytes: number,
  ) {}

  /** Returns false when `data` was not output progress (or not well formed). */
  take(data: unknown): boolean {
    const parsed = OutputProgress.safeParse(data);
    if (!parsed.success) return false;
    for (const [s, b64] of parsed.data.pyboxOutput) {
      const stream: Stream = STREAMS[s];
      const room = this.capBytes - this.heard[stream];
      if (room <= 0) continue;
      let bytes = Buffer.from(b64, 'base64');
      if (bytes.length > room) bytes = bytes.subarray(0, room);
      if (bytes.length === 0) continue;
      this.heard[stream] += bytes.length;
      this.listener(stream, bytes);
    }
    return true;
  }
}
