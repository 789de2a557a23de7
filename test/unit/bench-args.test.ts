// The bench's command line: scenario and runtime selection, counts, and refusals with a reason.
import { describe, expect, it } from 'vitest';
import { ArgsError, FULL, parseArgs, QUICK, SCENARIOS, USAGE } from '../../bench/args.ts';

describe('bench arguments', () => {
  it('runs every scenario with full counts and every runtime by default', () => {
    const o = parseArgs([]);
    expect(o.scenarios).toEqual([...SCENARIOS]);
    expect(o.runtimes).toBeNull();
    expect(o.counts).toEqual(FULL);
    expect(o.quick).toBe(false);
    expect(o.pacedIntervalMs).toBe(500);
    expect(o.scienceIntervalMs).toBe(1000);
  });

  it('--quick takes the quick counts and leaves the burst out unless named', () => {
    const o = parseArgs(['--quick']);
    expect(o.counts).toEqual(QUICK);
    expect(o.scenarios).not.toContain('burst');
    expect(o.scenarios).toContain('sustained');
    expect(parseArgs(['--quick', '--only', 'burst']).scenarios).toEqual(['burst']);
  });

  it('--only keeps the canonical order; --skip removes', () => {
    expect(parseArgs(['--only', 'sustained,paced']).scenarios).toEqual(['paced', 'sustained']);
    expect(parseArgs(['--only=back-to-back']).scenarios).toEqual(['back-to-back']);
    expect(parseArgs(['--skip', 'burst,baseline']).scenarios).toEqual(SCENARIOS.filter((s) => s !== 'burst' && s !== 'baseline'));
  });

  it('--runtime picks runtimes, in a fixed order', () => {
    expect(parseArgs(['--runtime', 'runsc']).runtimes).toEqual(['runsc']);
    expect(parseArgs(['--runtime=runsc,runc']).runtimes).toEqual(['runc', 'runsc']);
  });

  it('count flags override the preset, in either spelling', () => {
    const o = parseArgs(['--quick', '--samples', '3', '--clients=64', '--total', '200', '--ceiling-parallel', '4']);
    expect(o.counts).toEqual({ ...QUICK, samples: 3, clients: 64, sustainedTotal: 200, ceilingParallel: 4 });
    expect(parseArgs(['--paced-interval', '250']).pacedIntervalMs).toBe(250);
    expect(parseArgs([]).poolSize).toBeNull();
    expect(parseArgs(['--pool-size', '4']).poolSize).toBe(4);
    expect(() => parseArgs(['--pool-size', '300'])).toThrow(/between 1 and 256/);
  });

  it('refuses what it does not know, with the reason', () => {
    expect(() => parseArgs(['--only', 'warp'])).toThrow(/unknown scenario "warp"/);
    expect(() => parseArgs(['--runtime', 'kata'])).toThrow(/unknown runtime "kata"/);
    expect(() => parseArgs(['--frobnicate'])).toThrow(ArgsError);
    expect(() => parseArgs(['--samples'])).toThrow(/whole number/);
    expect(() => parseArgs(['--samples', '0'])).toThrow(/between 1/);
    expect(() => parseArgs(['--samples', '2.5'])).toThrow(/whole number/);
    expect(() => parseArgs(['--only'])).toThrow(/needs a value/);
    expect(() => parseArgs(['--only', '--quick'])).toThrow(/needs a value/);
    expect(() => parseArgs(['--only', 'burst', '--skip', 'burst'])).toThrow(/no scenario left/);
  });

  it('cluster is a scenario of its own, in quick runs too, with its window in seconds', () => {
    expect(parseArgs(['--only', 'cluster,paced']).scenarios).toEqual(['paced', 'cluster']);
    expect(parseArgs(['--quick']).scenarios).toContain('cluster');
    expect(parseArgs(['--skip', 'cluster']).scenarios).not.toContain('cluster');
    expect(parseArgs([]).counts.clusterSeconds).toBe(FULL.clusterSeconds);
    expect(parseArgs(['--quick']).counts.clusterSeconds).toBeLessThan(FULL.clusterSeconds);
    expect(parseArgs(['--quick', '--cluster-seconds=5']).counts.clusterSeconds).toBe(5);
    expect(() => parseArgs(['--cluster-seconds', '0'])).toThrow(/between 1/);
  });

  it('USAGE names every scenario and the cluster flag', () => {
    for (const s of SCENARIOS) expect(USAGE).toContain(s);
    expect(USAGE).toContain('--cluster-seconds');
  });

  it('--help parses without running anything', () => {
    expect(parseArgs(['--help']).help).toBe(true);
  });
});
