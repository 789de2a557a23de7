// Figures as rich outputs, for real: matplotlib in the sandbox image, the runner's backend and
// capture, the report, core's checks, the store and the HTTP answers, under every runtime. Also runs
// the runner's own Python tests of rich.py and the backend inside the image, where matplotlib is.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecutionResult, HistoryPage } from '../../src/core/schemas.ts';
import { postJson, realPybox, runtimesUnderTest, type RealPybox } from '../support/real.ts';

const runtimes = await runtimesUnderTest();
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A PNG's width and height, from its IHDR chunk (the first after the signature). */
function pngSize(base64: string): { width: number; height: number } {
  const png = Buffer.from(base64, 'base64');
  expect(png.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
  expect(png.subarray(12, 16).toString('latin1')).toBe('IHDR');
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

describe.each(runtimes)('figures under %s', (runtime) => {
  let pybox: RealPybox;

  beforeAll(async () => {
    // Room for three figures of at most 64 KiB each: a default figure (640×480) is some 15–25 KB.
    pybox = await realPybox(runtime, { limits: { outputsMax: 3, outputsMaxBytes: 64 * 1024 }, concurrency: { maxConcurrent: 2 } });
  });
  afterAll(async () => {
    await pybox?.dispose(); // fails if this instance left any container behind
  });

  const run = async (code: string): Promise<ExecutionResult> => {
    const res = await postJson(pybox.app, '/v1/executions', { code, timeoutMs: 60_000 });
    expect(res.status, res.text).toBe(200);
    return ExecutionResult.parse(res.json);
  };

  it('plt.show() and a figure left open both come back as PNGs; the store keeps them for GET, not for history', async () => {
    const r = await run(
      [
        'import matplotlib.pyplot as plt',
        'plt.plot([1, 2])',
        'plt.show()',
        'fig = plt.figure(figsize=(4, 3))',
        'plt.bar(["a", "b"], [3, 4])',
        'print("drawn")',
      ].join('\n'),
    );
    expect(r).toMatchObject({ status: 'completed', stdout: 'drawn\n' });
    expect(r.outputs?.map((o) => [o.type, o.kind])).toEqual([
      ['image/png', 'figure'],
      ['image/png', 'figure'],
    ]);
    expect(r).not.toHaveProperty('outputsDropped');
    // The shown one at matplotlib's default size and dpi, then the open one at its own.
    expect(pngSize(r.outputs![0]!.data)).toEqual({ width: 640, height: 480 });
    expect(pngSize(r.outputs![1]!.data)).toEqual({ width: 400, height: 300 });
    expect(r.feedback).toContain('2 figures were produced (PNG images, in outputs).');

    const got = await pybox.app.request(`/v1/executions/${r.id}`);
    expect(ExecutionResult.parse(await got.json()).outputs).toEqual(r.outputs);
    const page = HistoryPage.parse(await (await pybox.app.request('/v1/executions?limit=5')).json());
    const item = page.items.find((i) => i.id === r.id);
    expect(item).toBeDefined();
    expect(item).not.toHaveProperty('outputs');
  });

  it('drops what is over the caps and counts it: past the count, and a figure over the size', async () => {
    const many = await run(['import matplotlib.pyplot as plt', 'for i in range(5):', '    plt.plot([i, 1])', '    plt.show()'].join('\n'));
    expect(many.status).toBe('completed');
    expect(many.outputs).toHaveLength(3);
    expect(many.outputsDropped).toBe(2);
    expect(new Set(many.outputs!.map((o) => o.data)).size).toBe(3); // each show() drew afresh
    expect(many.feedback).toContain('2 more outputs were not returned');

    const big = await run(
      [
        'import numpy as np, matplotlib.pyplot as plt',
        'plt.figure(figsize=(12, 12))',
        'plt.imshow(np.random.default_rng(1).random((600, 600)))', // noise does not compress: far over 64 KiB
        'plt.figure(figsize=(1, 1))',
        'plt.plot([1, 2])',
      ].join('\n'),
    );
    expect(big.status).toBe('completed');
    expect(big.outputs?.map((o) => pngSize(o.data))).toEqual([{ width: 100, height: 100 }]);
    expect(big.outputsDropped).toBe(1);
  });

  it('a figure that cannot be drawn is dropped without spoiling the run', async () => {
    const r = await run(
      [
        'import matplotlib.pyplot as plt',
        'fig, ax = plt.subplots()',
        'def broken(*a, **k):',
        '    raise RuntimeError("cannot draw")',
        'ax.draw = broken',
        'plt.figure()',
        'plt.plot([1, 2])',
        'print("ok")',
      ].join('\n'),
    );
    expect(r).toMatchObject({ status: 'completed', stdout: 'ok\n', outputsDropped: 1 });
    expect(r.outputs).toHaveLength(1);
  });

  it('a run that never imports matplotlib has no outputs and loads none of it', async () => {
    const r = await run('import sys\nprint(sorted(m for m in sys.modules if m.startswith("matplotlib")))');
    expect(r).toMatchObject({ status: 'completed', stdout: '[]\n' });
    expect(r).not.toHaveProperty('outputs');
    expect(r).not.toHaveProperty('outputsDropped');
    expect(r.feedback).not.toContain('figure');
  });

  it('figures still come back when the code fails after drawing, and files in out/ as before', async () => {
    const r = await run(
      ['import matplotlib.pyplot as plt', 'plt.plot([1, 2])', 'plt.savefig("out/plot.png")', 'raise ValueError("after the plot")'].join('\n'),
    );
    expect(r.status).toBe('error');
    expect(r.error?.type).toBe('ValueError');
    expect(r.outputs).toHaveLength(1);
    expect(r.files?.map((f) => f.path)).toEqual(['plot.png']);
    expect(Buffer.from(r.files![0]!.contentBase64, 'base64').subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
  });

  it('a subprocess that draws finds the backend too (it inherits MPLBACKEND)', async () => {
    const r = await run(
      [
        'import subprocess, sys',
        'code = "import matplotlib.pyplot as plt; plt.plot([1]); plt.show(); print(plt.get_backend())"',
        'p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)',
        'print(p.returncode, p.stdout.strip(), p.stderr.strip()[-300:])',
      ].join('\n'),
    );
    expect(r.stdout).toBe('0 module://pybox_runner.mpl_backend \n');
  });
});

describe('the runner\'s Python tests of rich outputs, inside the image', () => {
  it('pass with matplotlib and pandas present', async () => {
    const pybox = await realPybox('runc');
    try {
      const src = join(import.meta.dirname, '../../images/python');
      const r = spawnSync(
        'docker',
        ['run', '--rm', '--network', 'none', '--user', '10001', '--tmpfs', '/tmp', '-v', `${src}:/src:ro`, '-w', '/src', '--entrypoint', 'python3', pybox.image, '-B', '-m', 'unittest', 'discover', '-s', 'tests', '-p', 'test_rich.py', '-v'],
        { encoding: 'utf8', timeout: 120_000 },
      );
      const report = `${r.stdout}${r.stderr}`;
      expect(r.status, report).toBe(0);
      expect(report).toMatch(/\nOK \(skipped=1\)/); // only the test for a host without matplotlib
      expect(report).toMatch(/test_each_show_gives_an_image_and_starts_afresh .* ok/);
      expect(report).toMatch(/test_dataframe_displays_as_html .* ok/);
    } finally {
      await pybox.dispose();
    }
  });
});
