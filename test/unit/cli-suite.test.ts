// How `pybox test` finds a suite: the file convention (X.py + X.in/X.out, numbered cases, .args)
// and the YAML manifest, and the errors a bad suite gives (they name the file, line or field).
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { discoverSuite, SuiteError } from '../../src/cli/suite/discovery.ts';
import { requestFor } from '../../src/cli/suite/runner.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pybox-suite-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function files(map: Record<string, string>): void {
  for (const [path, text] of Object.entries(map)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
}

const errorOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SuiteError);
    return (e as Error).message;
  }
  throw new Error('no error');
};

describe('the file convention', () => {
  it('finds single and numbered cases, arguments, .in without .out, and sub-directories', () => {
    files({
      'add.py': 'print(1)',
      'add.in': '1 2\n',
      'add.out': '3\n',
      'many.py': 'x',
      'many.10.in': 'ten',
      'many.10.out': 'TEN',
      'many.2.in': 'two',
      'many.2.out': 'TWO',
      'many.2.args': '--upper\n--strict\n',
      'only_in.py': 'x',
      'only_in.in': 'data',
      'sub/deep.py': 'y',
      'sub/deep.out': 'ok\n',
      'lib.py': 'def f(): pass',
    });
    const suite = discoverSuite(dir);
    expect(suite.programs.map((p) => p.name)).toEqual(['add', 'many', 'only_in', 'sub/deep']);
    expect(suite.skipped).toEqual(['lib.py']);
    const [add, many, onlyIn, deep] = suite.programs;
    expect(add!.cases).toEqual([{ name: 'add', stdin: '1 2\n', expectedStdout: '3\n' }]);
    expect(many!.cases).toEqual([
      { name: 'many.2', stdin: 'two', expectedStdout: 'TWO', args: ['--upper', '--strict'] },
      { name: 'many.10', stdin: 'ten', expectedStdout: 'TEN' },
    ]);
    expect(onlyIn!.cases).toEqual([{ name: 'only_in', stdin: 'data' }]);
    expect(deep!.cases).toEqual([{ name: 'deep', expectedStdout: 'ok\n' }]);
    expect(add!.code).toBe('print(1)');
  });

  it('takes one .py as PATH, and refuses one without cases', () => {
    files({ 'a.py': 'x', 'a.1.in': '1', 'a.1.out': '1', 'b.py': 'y' });
    expect(discoverSuite(join(dir, 'a.py')).programs.map((p) => [p.name, p.cases.length])).toEqual([['a', 1]]);
    expect(errorOf(() => discoverSuite(join(dir, 'b.py')))).toMatch(/no cases beside it/);
  });

  it('refuses a program with both X.in and numbered cases, args without a case, and an empty directory', () => {
    files({ 'a.py': 'x', 'a.in': '1', 'a.1.in': '2' });
    expect(errorOf(() => discoverSuite(dir))).toMatch(/a\.py: has both a\.in\/\.out and numbered cases/);
    rmSync(join(dir, 'a.in'));
    rmSync(join(dir, 'a.1.in'));
    files({ 'a.3.args': 'x\n' });
    expect(errorOf(() => discoverSuite(dir))).toMatch(/a\.3\.args: arguments for a case that has neither a\.3\.in nor a\.3\.out/);
    rmSync(join(dir, 'a.3.args'));
    expect(errorOf(() => discoverSuite(dir))).toMatch(/no programs with cases found/);
    expect(errorOf(() => discoverSuite(join(dir, 'nope')))).toMatch(/no such file or directory/);
  });
});

describe('the YAML manifest', () => {
  it('reads programs, cases, files, limits and comparisons, with defaults, beside convention programs', () => {
    files({
      'pybox-tests.yaml': `
defaults:
  timeoutMs: 4000
  compare: tokens
programs:
  - program: calc/mean.py
    name: mean
    memoryMb: 128
    compare: float
    tolerance: {absolute: 0.01}
    files: [data/n.txt, {path: data/other.csv, as: input.csv}]
    cases:
      - name: small
        stdin: "1 2\\n"
        args: [1, -v]
        expectedStdout: "1.5"
        timeoutMs: 1500
      - {stdinFile: cases/big.in, expectedStdoutFile: cases/big.out, compare: exact, expectedExitCode: 0}
  - program: conv.py
`,
      'calc/mean.py': 'print(1.5)',
      'data/n.txt': '1\n2\n',
      'data/other.csv': 'a,b\n',
      'cases/big.in': 'BIG IN',
      'cases/big.out': 'BIG OUT',
      'conv.py': 'print(input())',
      'conv.1.in': 'x',
      'conv.1.out': 'x',
      'other.py': 'pass',
      'other.in': '',
    });
    const suite = discoverSuite(dir);
    expect(suite.programs.map((p) => p.name)).toEqual(['conv', 'mean', 'other']);
    const mean = suite.programs.find((p) => p.name === 'mean')!;
    expect(mean).toMatchObject({ timeoutMs: 4000, memoryMb: 128 });
    expect(mean.files).toEqual([
      { path: 'data/n.txt', content: '1\n2\n', encoding: 'utf8' },
      { path: 'input.csv', content: 'a,b\n', encoding: 'utf8' },
    ]);
    expect(mean.cases).toEqual([
      { name: 'small', stdin: '1 2\n', args: ['1', '-v'], expectedStdout: '1.5', timeoutMs: 1500, compare: 'float', tolerance: { relative: 1e-6, absolute: 0.01 } },
      { stdin: 'BIG IN', expectedStdout: 'BIG OUT', expectedExitCode: 0, compare: 'exact', tolerance: { relative: 1e-6, absolute: 0.01 } },
    ]);
    // A manifest program without cases takes the convention files, with the manifest's comparison.
    expect(suite.programs.find((p) => p.name === 'conv')!.cases).toEqual([{ name: 'conv.1', stdin: 'x', expectedStdout: 'x', compare: 'tokens' }]);
    const built = requestFor(mean);
    expect('request' in built && built.request).toMatchObject({ code: 'print(1.5)', timeoutMs: 4000, memoryMb: 128, tests: mean.cases });
  });

  it('a .yaml given as PATH is the whole suite', () => {
    files({ 'only.yaml': 'programs:\n  - program: a.py\n    cases: [{expectedStdout: "1"}]\n', 'a.py': 'print(1)', 'b.py': 'x', 'b.in': '' });
    const suite = discoverSuite(join(dir, 'only.yaml'));
    expect(suite.programs.map((p) => p.name)).toEqual(['a']);
  });

  const bad: Array<[string, string, RegExp]> = [
    ['YAML syntax', 'programs:\n  - program: a.py\n    cases: [{stdin: "x"\n', /pybox-tests\.yaml:\d+:\d+: not valid YAML/],
    ['an unknown field', 'programs:\n  - program: a.py\n    cases: [{stdn: "x"}]\n', /programs\[0\]\.cases\[0\]: Unrecognized key: "stdn"/],
    ['a wrong type', 'programs:\n  - program: a.py\n    cases: [{expectedExitCode: "zero"}]\n', /programs\[0\]\.cases\[0\]\.expectedExitCode: Invalid input: expected number/],
    ['an exit code out of range', 'programs:\n  - program: a.py\n    cases: [{expectedExitCode: 300}]\n', /programs\[0\]\.cases\[0\]\.expectedExitCode: Too big/],
    ['an unknown comparison', 'programs:\n  - program: a.py\n    compare: fuzzy\n    cases: [{}]\n', /programs\[0\]\.compare: Invalid option/],
    ['no programs', 'defaults: {timeoutMs: 2000}\n', /programs: Invalid input: expected array/],
    ['a program that is not .py', 'programs:\n  - program: a.txt\n', /programs\[0\]\.program: must be a \.py file/],
    ['a missing program', 'programs:\n  - program: gone.py\n    cases: [{}]\n', /programs\[0\]\.program: no file "gone\.py"/],
    ['stdin twice', 'programs:\n  - program: a.py\n    cases: [{stdin: "1", stdinFile: a.py}]\n', /give stdin or stdinFile, not both/],
    ['a path outside the suite', 'programs:\n  - program: a.py\n    files: [../secret.txt]\n    cases: [{}]\n', /programs\[0\]\.files\[0\]: no file|outside the manifest's directory/],
    ['an absolute path', 'programs:\n  - program: a.py\n    files: [/etc/hostname]\n    cases: [{}]\n', /must be relative to the manifest's directory/],
    ['a reserved file name', 'programs:\n  - program: a.py\n    files: [{path: a.py, as: main.py}]\n    cases: [{}]\n', /programs\[0\]\.files\[0\]\.as: main\.py, out\/ and \.pybox\/ are reserved/],
    ['no cases anywhere', 'programs:\n  - program: a.py\n', /a\.py has no cases: give cases: or put its \.in\/\.out files beside it/],
  ];
  it.each(bad)('refuses %s with a clear error', (_what, yaml, message) => {
    files({ 'pybox-tests.yaml': yaml, 'a.py': 'print(1)', 'a.txt': '' });
    expect(errorOf(() => discoverSuite(dir))).toMatch(message);
  });

  it('refuses a link that leads out of the suite', () => {
    const outside = mkdtempSync(join(tmpdir(), 'pybox-outside-'));
    try {
      writeFileSync(join(outside, 'secret.txt'), 'secret');
      files({ 'a.py': 'x', 'pybox-tests.yaml': 'programs:\n  - program: a.py\n    files: [link.txt]\n    cases: [{}]\n' });
      symlinkSync(join(outside, 'secret.txt'), join(dir, 'link.txt'));
      expect(errorOf(() => discoverSuite(dir))).toMatch(/"link\.txt" is outside the manifest's directory/);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it('refuses two programs of the same name', () => {
    files({ 'a.py': 'x', 'a.in': '1', 'b.py': 'y', 'pybox-tests.yaml': 'programs:\n  - program: b.py\n    name: a\n    cases: [{}]\n' });
    expect(errorOf(() => discoverSuite(dir))).toMatch(/two programs are named "a"/);
  });
});

describe('the fixture suite', () => {
  it('has at least 50 programs, from both the convention and the manifest, and one helper skipped', () => {
    const suite = discoverSuite(join(import.meta.dirname, '../fixtures/suite'));
    expect(suite.programs.length).toBeGreaterThanOrEqual(50);
    expect(suite.skipped).toEqual(['helper_module.py']);
    const names = suite.programs.map((p) => p.name);
    expect(names).toEqual(expect.arrayContaining(['fizzbuzz', 'strings/count_upper', 'manifest/mean_stddev', 'timestamped report', 'manifest/matrix_multiply']));
    for (const p of suite.programs) expect('request' in requestFor(p), p.name).toBe(true);
    expect(suite.programs.filter((p) => p.cases.length > 1).length).toBeGreaterThan(20);
  });
});
