// Rich outputs (figures, a session call's displayed value) from the runner's report to the result:
// the report's schema, core's checks of each output against the caps, and what the feedback says.
// Fake outcomes; no Docker.
import { describe, expect, it } from 'vitest';
import { renderFeedback, type FeedbackInput } from '../../src/core/feedback.ts';
import { buildResult, type ResultDeps } from '../../src/core/results.ts';
import { ExecutionResult, type ResultOutput } from '../../src/core/schemas.ts';
import { FrameParser, FRAME_REPORT, maxOutputsReportBytes, parseReport, ProtocolError } from '../../src/engine/protocol.ts';
import { ManualClock, outcome, runnerFrame, runReport, type RunReport } from './fakes.ts';

const LIMITS = { timeoutMs: 5000, memoryMb: 256, cpus: 1, outputBytes: 50_000 };
const PNG_HEADER = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** A PNG as far as the checks go: its signature, then `size - 8` bytes. */
const png = (size = 100, fill = 1) => Buffer.concat([PNG_HEADER, Buffer.alloc(size - 8, fill)]).toString('base64');
const figure = (data = png()): ResultOutput => ({ type: 'image/png', data, kind: 'figure' });

const deps = (outputsMax = 3, outputsMaxBytes = 1000): ResultDeps => ({
  runtime: 'runc',
  limits: { floodBytes: 1_000_000, outputFilesMax: 5, outputFilesMaxBytes: 10_000, testOutputBytes: 4096, outputsMax, outputsMaxBytes },
  clock: new ManualClock(),
});

function build(report: Partial<RunReport>, d = deps(), stdout = ''): ExecutionResult {
  const r = buildResult(d, { id: 'e1', code: 'import matplotlib.pyplot as plt', limits: LIMITS, outcome: outcome('finished', { report: runReport(report), stdout }), createdAtMs: 0 });
  return ExecutionResult.parse(r);
}

describe('the runner report', () => {
  const report = (extra: Record<string, unknown>) => Buffer.from(JSON.stringify({ ...runReport(), ...extra }));

  it('carries outputs and outputsDropped', () => {
    const parsed = parseReport(report({ outputs: [figure()], outputsDropped: 2 }));
    expect(parsed).toMatchObject({ outputs: [figure()], outputsDropped: 2 });
    expect(parseReport(report({}))).not.toHaveProperty('outputs');
  });

  it('refuses outputs of an unknown type or kind, extra keys, a negative count', () => {
    for (const bad of [
      { outputs: [{ ...figure(), type: 'image/gif' }] },
      { outputs: [{ ...figure(), kind: 'plot' }] },
      { outputs: [{ ...figure(), extra: 1 }] },
      { outputs: [{ type: 'text/plain', kind: 'result' }] },
      { outputs: Array.from({ length: 101 }, () => figure()) },
      { outputsDropped: -1 },
      { outputsDropped: 1.5 },
    ]) {
      expect(() => parseReport(report(bad)), JSON.stringify(bad).slice(0, 80)).toThrow(ProtocolError);
    }
  });

  it('makes room in the report for the outputs the caps allow', () => {
    // Each output's data at most the base64 of outputsMaxBytes, plus its type and kind.
    expect(maxOutputsReportBytes(10, 3)).toBe(10 * (4 + 256));
    expect(maxOutputsReportBytes(0, 2 * 1024 * 1024)).toBe(0);
    const outputs = Array.from({ length: 3 }, () => figure(png(3000, 0xff)));
    const json = JSON.stringify({ ...runReport(), outputs });
    expect(json.length - JSON.stringify(runReport()).length).toBeLessThanOrEqual(maxOutputsReportBytes(3, 3000));
  });

  it('parses a large report fed in many small chunks, and the frame after it', () => {
    const payload = JSON.stringify({ ...runReport(), outputs: [figure(png(200_000))] });
    const wire = Buffer.concat([runnerFrame(FRAME_REPORT, payload), runnerFrame(1, 'after')]);
    const frames: Array<[number, string]> = [];
    const parser = new FrameParser({ maxFrameBytes: 1024, maxReportBytes: 400_000 }, (kind, data) => frames.push([kind, data.toString()]));
    for (let i = 0; i < wire.length; i += 1000) parser.push(wire.subarray(i, i + 1000));
    expect(frames).toEqual([
      [FRAME_REPORT, payload],
      [1, 'after'],
    ]);
  });
});

describe('outputs in the result', () => {
  it('keeps valid figures in order; none means no outputs key at all', () => {
    const a = figure(png(100, 1));
    const b = figure(png(100, 2));
    const r = build({ outputs: [a, b] });
    expect(r.outputs).toEqual([a, b]);
    expect(r).not.toHaveProperty('outputsDropped');
    const plain = build({});
    expect(plain).not.toHaveProperty('outputs');
    expect(plain).not.toHaveProperty('outputsDropped');
  });

  it('drops what is not base64 of a PNG, over the size cap, or past the count cap, and counts them with the runner own', () => {
    const ok = figure();
    const r = build(
      {
        outputs: [
          figure('not base64!'),
          figure(png(100).slice(0, -1)), // not a multiple of 4
          figure(Buffer.from('GIF89a-not-a-png').toString('base64')),
          figure(png(1001)), // one byte over outputsMaxBytes
          ok,
          { type: 'text/plain', data: 'x'.repeat(1001), kind: 'result' },
          { type: 'text/plain', data: 'lone \ud800 surrogate', kind: 'result' },
          { type: 'text/html', data: '<b>é</b>', kind: 'result' },
          figure(png(1000)), // exactly at the cap
          figure(), // past outputsMax (3)
        ],
        outputsDropped: 4,
      },
      deps(3, 1000),
    );
    expect(r.outputs).toEqual([ok, { type: 'text/html', data: '<b>é</b>', kind: 'result' }, figure(png(1000))]);
    expect(r.outputsDropped).toBe(4 + 7);
  });

  it('counts a text by its UTF-8 bytes', () => {
    const snowmen = '\u2603'.repeat(334); // 1002 bytes in UTF-8, 334 characters
    expect(build({ outputs: [{ type: 'text/plain', data: snowmen, kind: 'result' }] }, deps(3, 1000)).outputsDropped).toBe(1);
    expect(build({ outputs: [{ type: 'text/plain', data: snowmen.slice(1), kind: 'result' }] }, deps(3, 1000)).outputs).toHaveLength(1);
  });

  it('an outputsMax of 0 returns none and counts them all', () => {
    const r = build({ outputs: [figure(), figure()] }, deps(0, 1000));
    expect(r).not.toHaveProperty('outputs');
    expect(r.outputsDropped).toBe(2);
  });

  it('a run that timed out or failed has none', () => {
    const r = buildResult(deps(), { id: 'e1', code: '', limits: LIMITS, outcome: outcome('timeout', { report: null, durationMs: 5000 }), createdAtMs: 0 });
    expect(r).not.toHaveProperty('outputs');
  });
});

describe('the feedback about outputs', () => {
  const input = (over: Partial<FeedbackInput>): FeedbackInput => ({
    status: 'completed',
    success: true,
    exitCode: 0,
    signal: null,
    stdout: '',
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: 520,
    cpuMs: 400,
    error: null,
    runtime: 'runc',
    limits: LIMITS,
    ...over,
  });

  it('says how many figures were produced, and where they are', () => {
    const two = renderFeedback(input({ outputs: [figure(), figure()] }), '');
    expect(two).toContain('2 figures were produced (PNG images, in outputs).');
    expect(two).not.toContain('use print()');
    const one = renderFeedback(input({ outputs: [figure()], stdout: 'done\n' }), '');
    expect(one).toContain('1 figure was produced (a PNG image, in outputs).');
    expect(one.indexOf('figure was produced')).toBeLessThan(one.indexOf('stdout:'));
  });

  it('says what was not returned', () => {
    expect(renderFeedback(input({ outputs: [figure()], outputsDropped: 3 }), '')).toContain('3 more outputs were not returned: over the limit on their number or size, or they could not be drawn.');
    expect(renderFeedback(input({ outputsDropped: 1 }), '')).toContain('1 output was not returned');
  });

  it('shows a displayed value briefly, and in which other forms outputs has it', () => {
    const text = renderFeedback(
      input({
        outputs: [
          { type: 'text/plain', data: '   a  b\n0  1  2\n', kind: 'result' },
          { type: 'text/html', data: '<table></table>', kind: 'result' },
        ],
      }),
      '',
    );
    expect(text).toContain('Value of the last expression (also as HTML in outputs):\n       a  b\n    0  1  2');
    expect(text).not.toContain('figure');
    const long = renderFeedback(input({ outputs: [{ type: 'text/plain', data: 'x'.repeat(10_000), kind: 'result' }] }), '', { budgetChars: 4000 });
    expect(long).toContain('characters cut');
    expect(long.length).toBeLessThanOrEqual(4000);
  });

  it('says nothing of outputs when there are none', () => {
    const text = renderFeedback(input({}), '');
    expect(text).not.toMatch(/figure|outputs/);
    expect(text).toContain('use print()');
  });

  it('is in the result built from a report with figures', () => {
    expect(build({ outputs: [figure()] }).feedback).toContain('1 figure was produced');
  });
});
