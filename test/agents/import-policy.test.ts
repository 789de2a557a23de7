// The import policy (off | warn | block) against the real runner: imports are found on the code's
// syntax tree before it runs; warn adds a note to the feedback, block answers validation_failed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/schema.ts';
import { ExecutionResult } from '../../src/core/schemas.ts';
import { postJson, realPybox, type RealPybox } from '../support/real.ts';

const policies: Record<'off' | 'warn' | 'block', Partial<Config['importPolicy']>> = {
  off: { mode: 'off' },
  warn: {}, // the default: warn, with config/default.yaml's lists
  block: { mode: 'block', safeModules: ['socket.gethostname'] },
};
const boxes: Partial<Record<keyof typeof policies, RealPybox>> = {};

beforeAll(async () => {
  for (const [mode, importPolicy] of Object.entries(policies)) {
    boxes[mode as keyof typeof policies] = await realPybox('runc', { importPolicy });
  }
});
afterAll(async () => {
  for (const box of Object.values(boxes)) await box?.dispose();
});

async function run(mode: keyof typeof policies, code: string): Promise<ExecutionResult> {
  const res = await postJson(boxes[mode]!.app, '/v1/executions', { code });
  expect(res.status, res.text).toBe(200);
  return ExecutionResult.parse(res.json);
}

const NETWORKY = ['import json', 'import socket', 'from urllib import request', 'import os.path', 'mod = __import__("subprocess")', 'print("ran")'].join('\n');

describe('import policy: warn (the default)', () => {
  it('runs the code and notes each flagged import with its line', async () => {
    const r = await run('warn', NETWORKY);
    expect(r.status).toBe('completed');
    expect(r.stdout).toBe('ran\n');
    expect(r.feedback).toContain("Note: this server's import policy flags socket (line 2), urllib.request (line 3), subprocess (line 5).");
    expect(r.feedback).not.toMatch(/flags[^.]*(json|os\.path)/);
  });

  it('adds no note when nothing is flagged', async () => {
    const r = await run('warn', 'import json, math\nprint(json.dumps(math.pi))');
    expect(r.status).toBe('completed');
    expect(r.feedback).not.toContain('import policy');
  });

  it('keeps the note on a failed run, after the error', async () => {
    const r = await run('warn', 'import subprocess\nraise ValueError("boom")');
    expect(r.status).toBe('error');
    expect(r.feedback.startsWith('The code failed with ValueError: boom')).toBe(true);
    expect(r.feedback).toContain('flags subprocess (line 1)');
  });
});

describe('import policy: block', () => {
  it('answers validation_failed naming the import and its line, and runs nothing', async () => {
    const r = await run('block', 'print("must not run")\nimport json\nimport subprocess\nsubprocess.run(["ls"])');
    expect(r.status).toBe('validation_failed');
    expect(r.stdout).toBe('');
    expect(r.error).toMatchObject({
      type: 'ImportPolicyError',
      message: "this server's import policy blocks subprocess (line 3)",
      line: 3,
      column: 1,
      text: 'import subprocess',
      caret: '^',
    });
    expect(r.feedback).toBe(
      "The code was not run: this server's import policy blocks subprocess (line 3). Rewrite the code without the blocked imports.\n\n" +
        'Line 3:\n    import subprocess\n    ^',
    );
    expect(r.stderr).toBe('  File "main.py", line 3\n    import subprocess\n    ^\nImportPolicyError: this server\'s import policy blocks subprocess (line 3)\n');
  });

  it('names every blocked import, sees imports inside functions, and lets a safe entry win', async () => {
    const code = ['from socket import gethostname', 'def f():', '    import ctypes', '    from socket import socket', 'print(gethostname())'].join('\n');
    const r = await run('block', code);
    expect(r.status).toBe('validation_failed');
    expect(r.error?.message).toBe("this server's import policy blocks ctypes (line 3), socket (line 4)");
    expect(r.error?.line).toBe(3);
    const allowed = await run('block', 'from socket import gethostname\nprint(len(gethostname()) > 0)');
    expect(allowed.status).toBe('completed');
    expect(allowed.stdout).toBe('True\n');
  });

  it('reports a syntax error first', async () => {
    const r = await run('block', 'import subprocess\nif True print(1)');
    expect(r.error?.type).toBe('SyntaxError');
  });
});

describe('import policy: off', () => {
  it('neither notes nor blocks', async () => {
    const r = await run('off', NETWORKY);
    expect(r.status).toBe('completed');
    expect(r.feedback).not.toContain('import policy');
  });
});
