// The benchmark's arithmetic: nearest-rank percentiles, CPU time from /proc/stat, and whether the
// machine was quiet enough for the figures to mean much. Pure, so it is unit-tested.
import type { RuntimeName } from '../src/core/schemas.ts';

export interface Row {
  name: string;
  /** The scenario that produced it, and under which runtime (absent for host baselines). */
  scenario?: string;
  runtime?: RuntimeName;
  samples: number;
  p50: number;
  p95: number;
  p99: number;
  /** The mean: where latencies are bimodal (a warm sandbox or a cold start), it shows the cost per run that p50 hides. */
  mean: number;
  /** p50 over the unsandboxed baseline's p50. */
  ratio?: number;
  /** Completed runs per second, for throughput rows. */
  perSecond?: number;
  /** This row against another measured in the same run (p50 over p50, or rate over rate). */
  versus?: Versus;
  /** Machine-wide CPU time spent per completed run while the row was measured (every process). */
  cpuMsPerRun?: number;
}

/** One row read against another of the same run. */
export interface Versus {
  name: string;
  /** p50 over p50 (latency rows), or runs/s over runs/s (throughput rows). */
  ratio: number;
  meanRatio?: number;
  /** This row's p50 minus the other's, in ms (latency rows read against an absolute target). */
  deltaMs?: number;
}

/** A latency row against another: the ratios of medians and means, and optionally the median's difference. */
export function versusLatency(row: Row, ref: Row, withDelta = false): Versus {
  return { name: ref.name, ratio: round2(row.p50 / ref.p50), meanRatio: round2(row.mean / ref.mean), ...(withDelta ? { deltaMs: round1(row.p50 - ref.p50) } : {}) };
}

/** A throughput row against another: rate over rate; undefined when either has no rate. */
export function versusRate(row: Row, ref: Row): Versus | undefined {
  if (!row.perSecond || !ref.perSecond) return undefined;
  return { name: ref.name, ratio: round2(row.perSecond / ref.perSecond) };
}

/** The table's cell for a versus: `1.02x (mean 1.1x) +3.4 ms name`, the runtime left off the name. */
export function versusCell(v: Versus | undefined): string {
  if (!v) return '';
  const mean = v.meanRatio === undefined ? '' : ` (mean ${v.meanRatio}x)`;
  const delta = v.deltaMs === undefined ? '' : ` ${v.deltaMs >= 0 ? '+' : ''}${v.deltaMs.toFixed(1)} ms`;
  return `${v.ratio}x${mean}${delta} ${v.name.replace(/ \((runc|runsc)\)$/, '')}`;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

export const round1 = (v: number) => Math.round(v * 10) / 10;
export const round2 = (v: number) => Math.round(v * 100) / 100;

export function summarize(name: string, samples: number[]): Row {
  const sorted = [...samples].sort((a, b) => a - b);
  const mean = sorted.length === 0 ? NaN : sorted.reduce((x, y) => x + y, 0) / sorted.length;
  return { name, samples: sorted.length, p50: round1(percentile(sorted, 50)), p95: round1(percentile(sorted, 95)), p99: round1(percentile(sorted, 99)), mean: round1(mean) };
}

/** Total and busy CPU time of the whole machine, in clock ticks, from /proc/stat's first line. */
export interface CpuTicks {
  busy: number;
  total: number;
}

export function parseProcStat(text: string): CpuTicks {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) throw new Error('no aggregate cpu line in /proc/stat');
  // user nice system idle iowait irq softirq steal [guest guest_nice]: guests are already in user.
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (f.length < 4 || f.some((v) => !Number.isFinite(v))) throw new Error('malformed cpu line in /proc/stat');
  const total = f.reduce((a, b) => a + b, 0);
  const idle = f[3]! + (f[4] ?? 0);
  return { busy: total - idle, total };
}

/** Busy CPU milliseconds between two readings (clock ticks are 10 ms on Linux: USER_HZ 100). */
export const busyMs = (from: CpuTicks, to: CpuTicks, tickMs = 10) => (to.busy - from.busy) * tickMs;

/** The share of the machine's CPU time that was busy between two readings, 0..1. */
export const busyShare = (from: CpuTicks, to: CpuTicks) => (to.total > from.total ? (to.busy - from.busy) / (to.total - from.total) : 0);

/**
 * A warning when the machine was not quiet before the run: a 1-minute load average above a
 * quarter of the cores, or more than 15 % of the CPU busy while nothing of the bench ran.
 */
export function quietnessWarning(load1: number, cpus: number, idleBusyShare: number): string | null {
  const reasons: string[] = [];
  if (load1 > cpus / 4) reasons.push(`load average ${load1.toFixed(2)} on ${cpus} cores`);
  if (idleBusyShare > 0.15) reasons.push(`${Math.round(idleBusyShare * 100)} % of the CPU busy before the bench started`);
  return reasons.length > 0 ? `WARNING: the machine is not quiet (${reasons.join('; ')}): every figure is inflated and noisy` : null;
}
