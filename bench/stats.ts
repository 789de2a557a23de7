// Order statistics for the benchmark tables (nearest-rank percentiles).
export interface Row {
  name: string;
  samples: number;
  p50: number;
  p95: number;
  p99: number;
  /** p50 over the unsandboxed baseline's p50. */
  ratio?: number;
  perSecond?: number;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

const round = (v: number) => Math.round(v * 10) / 10;

export function summarize(name: string, samples: number[]): Row {
  const sorted = [...samples].sort((a, b) => a - b);
  return { name, samples: sorted.length, p50: round(percentile(sorted, 50)), p95: round(percentile(sorted, 95)), p99: round(percentile(sorted, 99)) };
}
