// Capture of one output stream with a byte cap applied while streaming: bytes past the cap are
// counted and dropped, never buffered.

export class CappedCapture {
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  /** Every byte the stream produced, kept or not. */
  totalBytes = 0;

  constructor(private readonly capBytes: number) {}

  /** Takes the stream's next bytes; returns the part kept (a copy), null when the cap was reached. */
  push(data: Buffer): Buffer | null {
    this.totalBytes += data.length;
    const room = this.capBytes - this.kept;
    if (room <= 0 || data.length === 0) return null;
    const part = data.length <= room ? data : data.subarray(0, room);
    // Copy: the source buffer may be a view into a larger, reused socket buffer.
    const copy = Buffer.from(part);
    this.chunks.push(copy);
    this.kept += copy.length;
    return copy;
  }

  get truncated(): boolean {
    return this.totalBytes > this.kept;
  }

  /** The kept bytes as text. Invalid UTF-8 (or a sequence cut by the cap) becomes U+FFFD. */
  text(): string {
    return new TextDecoder('utf-8', { fatal: false }).decode(Buffer.concat(this.chunks, this.kept));
  }
}

/** A stream the runner captured itself (a test case's): its kept bytes and the count it reported. */
export class ReportedOutput {
  /** Decoded once: the verdict, the result and the feedback each read it. */
  private decoded: string | undefined;

  constructor(
    private readonly kept: Buffer,
    /** Every byte the stream produced, kept or not (never less than what was kept). */
    readonly totalBytes: number,
  ) {}

  get truncated(): boolean {
    return this.totalBytes > this.kept.length;
  }

  text(): string {
    this.decoded ??= new TextDecoder('utf-8', { fatal: false }).decode(this.kept);
    return this.decoded;
  }
}
