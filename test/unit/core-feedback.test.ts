import { describe, expect, it } from 'vitest';
import { DEFAULT_FEEDBACK_BUDGET_CHARS, renderFeedback, trimMiddle, type FeedbackInput } from '../../src/core/feedback.ts';
import type { ExecutionStatus } from '../../src/core/schemas.ts';

function input(status: ExecutionStatus, overrides: Partial<FeedbackInput> = {}): FeedbackInput {
  return {
    status,
    success: status === 'completed',
    exitCode: status === 'completed' ? 0 : null,
    signal: null,
    stdout: '',
    stderr: '',
    truncated: { stdout: false, stderr: false },
    durationMs: 1500,
    error: null,
    runtime: 'runc',
    limits: { timeoutMs: 30_000, memoryMb: 256, cpus: 1, outputBytes: 50_000 },
    ...overrides,
  };
}

const CODE = ['import math', 'def f(x):', '    return 1 / x', 'print(f(0))'].join('\n');

/** The cut count a trimMiddle marker names, or null. */
const cutCount = (s: string): number | null => {
  const m = /\n… \[(\d+) characters cut\] …\n/.exec(s);
  return m ? Number(m[1]) : null;
};

describe('trimMiddle', () => {
  it('returns text within the budget unchanged', () => {
    expect(trimMiddle('hello', 5)).toBe('hello');
    expect(trimMiddle('', 0)).toBe('');
    expect(trimMiddle('x'.repeat(4000), 4000)).toBe('x'.repeat(4000));
  });

  it('keeps 40% head and 60% tail of the room left by the marker, and names the cut', () => {
    // marker(1000) is 27 chars: room 73, head ceil(29.2) = 30, tail 43, cut 927.
    expect(trimMiddle('x'.repeat(1000), 100)).toBe(`${'x'.repeat(30)}\n… [927 characters cut] …\n${'x'.repeat(43)}`);
  });

  it('keeps the exact head and tail of the text, and the cut count adds up', () => {
    const text = Array.from({ length: 2000 }, (_, i) => `${i},`).join('');
    const out = trimMiddle(text, 500);
    expect(out.length).toBeLessThanOrEqual(500);
    const cut = cutCount(out);
    expect(cut).not.toBeNull();
    const [head = '', tail = ''] = out.split(/\n… \[\d+ characters cut\] …\n/);
    expect(text.startsWith(head)).toBe(true);
    expect(text.endsWith(tail)).toBe(true);
    expect(head.length + tail.length + (cut ?? 0)).toBe(text.length);
    expect(head.startsWith('0,1,2,')).toBe(true);
    expect(tail.endsWith('1998,1999,')).toBe(true);
  });

  it('stays within the budget for many sizes', () => {
    for (const len of [101, 150, 999, 1000, 10_000, 1_000_000]) {
      for (const budget of [60, 100, 500, 4000]) {
        if (len <= budget) continue;
        expect(trimMiddle('y'.repeat(len), budget).length, `len ${len} budget ${budget}`).toBeLessThanOrEqual(budget);
      }
    }
  });
});

/** True when the string holds a lone (unpaired) UTF-16 surrogate. */
const hasLoneSurrogate = (s: string) => /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);

describe('trimMiddle and characters outside the BMP', () => {
  // Regression test (src/core/feedback.ts:18): head and tail are cut by UTF-16 code units, so an emoji (or any
  // astral character) on either cut is split into a lone surrogate. The feedback then holds text
  // that is not valid Unicode: JSON.stringify emits "\ud83d", which strict clients reject (e.g.
  // serde_json) and which cannot be encoded as UTF-8. 85 of the budgets 60..199 hit it here.
  it('never leaves half of a surrogate pair at either cut', () => {
    const text = 'a\u{1F600}'.repeat(1000);
    for (let budget = 60; budget < 200; budget++) expect(hasLoneSurrogate(trimMiddle(text, budget)), `budget ${budget}`).toBe(false);
  });
});

describe('renderFeedback headlines', () => {
  it('completed: says it ran, the duration and the exit code, and shows stdout', () => {
    const out = renderFeedback(input('completed', { stdout: '42\n' }), CODE);
    expect(out).toBe('The code ran successfully in 1.50 s (exit code 0).\n\nstdout:\n42');
  });

  it('completed with no output: says the code printed nothing', () => {
    const out = renderFeedback(input('completed'), CODE);
    expect(out).toBe('The code ran successfully in 1.50 s (exit code 0).\n\nstdout: (empty: the code printed nothing; use print() to show results)');
  });

  it('formats long durations with one decimal', () => {
    expect(renderFeedback(input('completed', { durationMs: 12_345 }), CODE)).toMatch(/^The code ran successfully in 12\.3 s \(exit code 0\)\./);
  });

  it('error: names the type and message, quotes the user\'s line, shows the traceback once', () => {
    const traceback = 'Traceback (most recent call last):\n  File "main.py", line 4, in <module>\n  File "main.py", line 3, in f\nZeroDivisionError: division by zero\n';
    const out = renderFeedback(
      input('error', {
        exitCode: 1,
        error: { type: 'ZeroDivisionError', message: 'division by zero', line: 3, traceback },
        stderr: traceback,
        stdout: 'started\n',
      }),
      CODE,
    );
    expect(out.startsWith('The code failed with ZeroDivisionError: division by zero\n\n')).toBe(true);
    expect(out).toContain('The error points at line 3 of the code:\n    return 1 / x');
    expect(out).toContain(`Traceback:\n${traceback.trimEnd()}`);
    expect(out.split('ZeroDivisionError: division by zero').length - 1).toBe(2); // headline + traceback, stderr not repeated
    expect(out).not.toContain('stderr');
    expect(out).toContain('stdout:\nstarted');
  });

  it('error: quotes a line from CRLF source without the carriage return', () => {
    const out = renderFeedback(input('error', { exitCode: 1, error: { type: 'NameError', message: "name 'y' is not defined", line: 2 } }), 'x = 1\r\nprint(y)\r\n');
    expect(out).toContain('The error points at line 2 of the code:\n    print(y)');
    expect(out).not.toContain('\r');
  });

  it('error: no pointer when the line is outside the code', () => {
    const out = renderFeedback(input('error', { exitCode: 1, error: { type: 'E', message: 'm', line: 99 } }), CODE);
    expect(out).not.toContain('points at');
  });

  it('error by a signal: names the signal and the exit code', () => {
    const out = renderFeedback(input('error', { exitCode: 139, signal: 'SIGSEGV' }), CODE);
    expect(out.startsWith('The code was killed by SIGSEGV (exit code 139).')).toBe(true);
  });

  it('error by exit code: names the code', () => {
    const out = renderFeedback(input('error', { exitCode: 3, stderr: 'bad input\n' }), CODE);
    expect(out).toBe('The code exited with code 3 (non-zero means failure).\n\nstderr:\nbad input');
  });

  it('error: a FileExistsError for out/ says that out/ exists before the code starts', () => {
    const error = (message: string) => ({ type: 'FileExistsError', message, line: 1, traceback: `FileExistsError: ${message}\n` });
    const out = renderFeedback(input('error', { exitCode: 1, error: error("[Errno 17] File exists: 'out'") }), CODE);
    expect(out).toContain("out/ already exists when the code starts");
    expect(out).toContain("exist_ok=True");
    const other = renderFeedback(input('error', { exitCode: 1, error: error("[Errno 17] File exists: 'outputs'") }), CODE);
    expect(other).not.toContain('out/ already exists');
  });

  it('timeout: says nothing ran when the budget ran out while the sandbox was starting', () => {
    const out = renderFeedback(input('timeout', { durationMs: 0, limits: { timeoutMs: 3000, memoryMb: 256, cpus: 0.1, outputBytes: 50_000 } }), CODE);
    expect(out).toMatch(/^Nothing ran: the time limit of 3\.00 s ran out while the sandbox was still starting/);
    expect(out).not.toContain('Make it faster');
  });

  it('timeout: says how long the code itself ran when the start took part of the budget', () => {
    const limits = { timeoutMs: 2000, memoryMb: 256, cpus: 1, outputBytes: 50_000 };
    expect(renderFeedback(input('timeout', { durationMs: 1200, limits }), CODE)).toContain('the code itself ran 1.20 s');
    expect(renderFeedback(input('timeout', { durationMs: 2000, limits }), CODE)).not.toContain('Starting the sandbox');
  });

  it('timeout: names the time limit in seconds and shows the output so far', () => {
    const out = renderFeedback(input('timeout', { limits: { timeoutMs: 2000, memoryMb: 256, cpus: 1, outputBytes: 50_000 }, stdout: 'tick\ntick\n', signal: 'SIGKILL' }), CODE);
    expect(out.startsWith('The code was stopped because it ran longer than the time limit of 2.00 s.')).toBe(true);
    expect(out).toContain('infinite loop');
    expect(out.endsWith('stdout:\ntick\ntick')).toBe(true);
    expect(renderFeedback(input('timeout'), CODE)).toContain('time limit of 30.0 s');
  });

  it('oom: names the memory limit in MB', () => {
    const out = renderFeedback(input('oom', { exitCode: 137, signal: 'SIGKILL', limits: { timeoutMs: 1000, memoryMb: 512, cpus: 1, outputBytes: 50_000 } }), CODE);
    expect(out.startsWith('The code was killed because it used more than the memory limit of 512 MB.')).toBe(true);
    expect(out).not.toContain('stdout');
  });

  it('output_limit: names the per-stream byte cap and marks the cut', () => {
    const out = renderFeedback(
      input('output_limit', { stdout: 'spam\n'.repeat(10), truncated: { stdout: true, stderr: false }, limits: { timeoutMs: 1000, memoryMb: 256, cpus: 1, outputBytes: 1_048_576 } }),
      CODE,
    );
    expect(out.startsWith('The code was stopped because it printed far too much output (each stream keeps 1,048,576 bytes).')).toBe(true);
    expect(out).toContain('stdout (cut at the output limit):\nspam\n');
  });

  it('validation_failed: shows the error position, the text and the caret', () => {
    const out = renderFeedback(
      input('validation_failed', {
        exitCode: 1,
        error: { type: 'SyntaxError', message: 'invalid syntax', line: 3, column: 9, text: 'x = = 1', caret: '    ^' },
        stderr: 'SyntaxError: invalid syntax\n',
      }),
      'a = 1\nif a:\n    x = = 1\n',
    );
    expect(out.startsWith('The code was not run: it has a SyntaxError at line 3, column 9: invalid syntax\n\nLine 3:\n    x = = 1\n        ^')).toBe(true);
  });

  it('validation_failed without column or text: line only, no caret block', () => {
    const out = renderFeedback(input('validation_failed', { error: { type: 'ValueError', message: 'source code string cannot contain null bytes', line: null } }), CODE);
    expect(out).toBe('The code was not run: it has a ValueError at line ?: source code string cannot contain null bytes');
  });

  it('internal_error: says it is not the code\'s fault and gives the reason', () => {
    const out = renderFeedback(input('internal_error', { error: { type: 'InternalError', message: 'the sandbox stopped without a report (exit code 70)', line: null } }), CODE);
    expect(out).toBe(
      'The sandbox service failed to run the code; this is not a fault of the code itself. You may retry. (the sandbox stopped without a report (exit code 70))',
    );
  });

  it('lists returned files with their sizes', () => {
    const out = renderFeedback(
      input('completed', {
        stdout: 'ok\n',
        files: [
          { path: 'plot.png', size: 12_345, contentBase64: '' },
          { path: 'a/b.csv', size: 7, contentBase64: '' },
        ],
      }),
      CODE,
    );
    expect(out.endsWith('Files returned from out/: plot.png (12,345 bytes), a/b.csv (7 bytes)')).toBe(true);
  });
});

describe('renderFeedback budget', () => {
  const lines = Array.from({ length: 90_000 }, (_, i) => `line ${String(i).padStart(6, '0')}`);
  const big = lines.join('\n') + '\n';
  const SLACK = 100;

  it('keeps a 1 MB stdout within the budget, with its first and last lines', () => {
    expect(big.length).toBeGreaterThan(1_000_000);
    const out = renderFeedback(input('output_limit', { stdout: big, truncated: { stdout: true, stderr: false } }), CODE);
    expect(out.length).toBeLessThanOrEqual(DEFAULT_FEEDBACK_BUDGET_CHARS + SLACK);
    expect(out).toContain('\nline 000000\n');
    expect(out.endsWith('line 089999')).toBe(true);
    expect(cutCount(out)).toBeGreaterThan(990_000);
  });

  it('keeps 1 MB on both streams plus a long traceback within the budget', () => {
    const traceback = 'Traceback (most recent call last):\n' + '  File "main.py", line 2, in f\n'.repeat(5000) + 'RecursionError: maximum recursion depth exceeded\n';
    const r = input('error', {
      exitCode: 1,
      stdout: big,
      stderr: big,
      error: { type: 'RecursionError', message: 'maximum recursion depth exceeded', line: 2, traceback },
    });
    const out = renderFeedback(r, CODE);
    expect(out.length).toBeLessThanOrEqual(DEFAULT_FEEDBACK_BUDGET_CHARS + SLACK);
    expect(out).toContain('RecursionError: maximum recursion depth exceeded');
    expect(out).toContain('line 000000');
    expect(out).toContain('line 089999');
  });

  it('keeps both streams visible, head and tail, when both are huge', () => {
    const r = input('error', { exitCode: 1, stdout: big, stderr: big.replaceAll('line', 'err') });
    const out = renderFeedback(r, CODE);
    expect(out.length).toBeLessThanOrEqual(DEFAULT_FEEDBACK_BUDGET_CHARS + SLACK);
    for (const s of ['line 000000', 'line 089999', 'err 000000', 'err 089999']) expect(out).toContain(s);
  });

  it('honours a smaller budget', () => {
    const out = renderFeedback(input('completed', { stdout: big }), CODE, { budgetChars: 1000 });
    expect(out.length).toBeLessThanOrEqual(1000 + SLACK);
    expect(out).toContain('line 000000');
    expect(out.endsWith('line 089999')).toBe(true);
  });
});
