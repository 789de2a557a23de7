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
  versus?: { name: string; ratio: number; meanRatio?: number };
  /** Machine-wide CPU time spent per completed run while the row was measured (every process). */
  cpuMsPerRun?: number;
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
