// The benchmark's arithmetic: nearest-rank percentiles, and a chart that shows every latency row.
import { describe, expect, it } from 'vitest';
import { renderSvg } from '../../bench/chart.ts';
import { busyMs, busyShare, parseProcStat, percentile, quietnessWarning, summarize, versusCell, versusLatency, versusRate } from '../../bench/stats.ts';

describe('bench statistics', () => {
  it('uses nearest-rank percentiles', () => {
    const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentile(sorted, 50)).toBe(5);
    expect(percentile(sorted, 95)).toBe(10);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });

  it('summarizes unsorted samples, rounded to 0.1 ms', () => {
    expect(summarize('x', [30.04, 10.06, 20.01])).toEqual({ name: 'x', samples: 3, p50: 20, p95: 30, p99: 30, mean: 20 });
    // Bimodal, as back-to-back runs are: the mean shows what the median hides.
    expect(summarize('y', [40, 40, 40, 400, 400])).toMatchObject({ p50: 40, mean: 184 });
  });

  it('draws one bar per latency row, escaping names, and leaves throughput rows out', () => {
    const svg = renderSvg(
      [
        { name: 'baseline <host>', samples: 3, p50: 10, p95: 12, p99: 13, mean: 11, ratio: 1 },
        { name: 'pybox warm (runc)', samples: 3, p50: 12, p95: 15, p99: 16, mean: 13, ratio: 1.2 },
        { name: 'throughput', samples: 3, p50: 100, p95: 150, p99: 160, mean: 120, perSecond: 8 },
      ],
      { cpus: 2, cpuModel: 'test cpu', memoryGiB: 24 },
    );
    expect(svg.match(/<rect x=/g)).toHaveLength(2);
    expect(svg).toContain('baseline &lt;host&gt;');
    expect(svg).toContain('12.0 ms (1.2×)');
    expect(svg).not.toContain('throughput');
  });

  it('reads busy and total ticks from /proc/stat, counting iowait as idle', () => {
    const text = 'cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1 2 3\n';
    expect(parseProcStat(text)).toEqual({ busy: 160, total: 1180 });
    expect(() => parseProcStat('intr 1 2\n')).toThrow(/no aggregate cpu line/);
    expect(() => parseProcStat('cpu  a b c d\n')).toThrow(/malformed/);
  });

  it('turns two readings into busy milliseconds and a busy share', () => {
    const a = { busy: 100, total: 1000 };
    const b = { busy: 150, total: 1200 };
    expect(busyMs(a, b)).toBe(500);
    expect(busyShare(a, b)).toBe(0.25);
    expect(busyShare(a, a)).toBe(0);
  });

  it('warns when the machine is not quiet, and says why', () => {
    expect(quietnessWarning(0.3, 2, 0.05)).toBeNull();
    expect(quietnessWarning(2.71, 2, 0.05)).toMatch(/not quiet \(load average 2.71 on 2 cores\)/);
    expect(quietnessWarning(0.1, 2, 0.71)).toMatch(/71 % of the CPU busy/);
    expect(quietnessWarning(3, 2, 0.5)).toMatch(/load average 3.00 on 2 cores; 50 %/);
  });

  it('reads a latency row against another: ratios, and the difference of medians when asked', () => {
    const aio = { name: 'pybox paced, print(1) every 500 ms (runsc)', samples: 30, p50: 120, p95: 150, p99: 160, mean: 125 };
    const cl = { name: 'cluster paced (runsc)', samples: 30, p50: 123.4, p95: 160, p99: 170, mean: 130 };
    expect(versusLatency(cl, aio)).toEqual({ name: aio.name, ratio: 1.03, meanRatio: 1.04 });
    expect(versusLatency(cl, aio, true)).toEqual({ name: aio.name, ratio: 1.03, meanRatio: 1.04, deltaMs: 3.4 });
    // Faster than the reference (noise): a negative difference, signed in the table.
    expect(versusLatency(aio, cl, true).deltaMs).toBe(-3.4);
    expect(versusCell(versusLatency(cl, aio, true))).toBe('1.03x (mean 1.04x) +3.4 ms pybox paced, print(1) every 500 ms');
    expect(versusCell(versusLatency(aio, cl, true))).toBe('0.97x (mean 0.96x) -3.4 ms cluster paced');
    expect(versusCell(undefined)).toBe('');
  });

  it('reads a throughput row against another by rate, and not at all without rates', () => {
    const one = { name: 'sustained (runc)', samples: 50, p50: 900, p95: 1500, p99: 1600, mean: 950, perSecond: 5 };
    const two = { name: 'cluster 2 workers (runc)', samples: 80, p50: 600, p95: 900, p99: 1000, mean: 620, perSecond: 8.2 };
    expect(versusRate(two, one)).toEqual({ name: one.name, ratio: 1.64 });
    expect(versusCell(versusRate(two, one))).toBe('1.64x sustained');
    expect(versusRate(two, { ...one, perSecond: undefined })).toBeUndefined();
    expect(versusRate({ ...two, perSecond: 0 }, one)).toBeUndefined();
  });
});
