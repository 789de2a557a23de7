// The benchmark's arithmetic: nearest-rank percentiles, and a chart that shows every latency row.
import { describe, expect, it } from 'vitest';
import { renderSvg } from '../../bench/chart.ts';
import { percentile, summarize } from '../../bench/stats.ts';

describe('bench statistics', () => {
  it('uses nearest-rank percentiles', () => {
    const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentile(sorted, 50)).toBe(5);
    expect(percentile(sorted, 95)).toBe(10);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });

  it('summarizes unsorted samples, rounded to 0.1 ms', () => {
    expect(summarize('x', [30.04, 10.06, 20.01])).toEqual({ name: 'x', samples: 3, p50: 20, p95: 30, p99: 30 });
  });

  it('draws one bar per latency row, escaping names, and leaves throughput rows out', () => {
    const svg = renderSvg(
      [
        { name: 'baseline <host>', samples: 3, p50: 10, p95: 12, p99: 13, ratio: 1 },
        { name: 'pybox warm (runc)', samples: 3, p50: 12, p95: 15, p99: 16, ratio: 1.2 },
        { name: 'throughput', samples: 3, p50: 100, p95: 150, p99: 160, perSecond: 8 },
      ],
      { cpus: 2, cpuModel: 'test cpu', memoryGiB: 24 },
    );
    expect(svg.match(/<rect x=/g)).toHaveLength(2);
    expect(svg).toContain('baseline &lt;host&gt;');
    expect(svg).toContain('12.0 ms (1.2×)');
    expect(svg).not.toContain('throughput');
  });
});
