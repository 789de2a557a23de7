// The names a context variable may have (core/python-names.ts): Python identifiers as the parser
// reads them, ASCII or not, without keywords, builtins or dunder names; and the JSON Schema pattern
// saying the same as the check, as far as a pattern can.
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { CONTEXT_NAME_PATTERN, ContextName, contextNameProblem, PYTHON_BUILTINS, PYTHON_KEYWORDS } from '../../src/core/python-names.ts';
import { ExecutionRequest } from '../../src/core/schemas.ts';

const accepted = ['x', 'data', '_', '_x', 'x1', 'snake_case', 'CamelCase', 'match', 'case', 'type_', 'café', 'π', 'résumé', '変数', 'Δt', 'a·b', 'straße'];

describe('contextNameProblem', () => {
  it('accepts Python identifiers, ASCII or not, soft keywords included', () => {
    for (const name of accepted) expect(contextNameProblem(name), name).toBeNull();
  });

  it('refuses what is not an identifier, saying why', () => {
    expect(contextNameProblem('1x')).toBe('must be a Python identifier, which cannot start with a digit');
    expect(contextNameProblem('٣x')).toBe('must be a Python identifier, which cannot start with a digit'); // an Arabic-Indic digit
    for (const name of ['a-b', 'a b', 'x.y', 'x\n', '$x', '·a', '\u0301e']) {
      expect(contextNameProblem(name), JSON.stringify(name)).toBe('must be a Python identifier (a letter or _, then letters, digits or _)');
    }
    expect(contextNameProblem('')).toBe('must not be empty');
    expect(contextNameProblem('x'.repeat(128))).toBeNull();
    expect(contextNameProblem('x'.repeat(129))).toBe('must be at most 128 characters long');
  });

  it('refuses names the code could not write as sent, naming the form Python reads (NFKC)', () => {
    expect(contextNameProblem('ﬁle')).toBe('must be written as Python reads it (NFKC): "file"');
    expect(contextNameProblem('e\u0301')).toBe('must be written as Python reads it (NFKC): "é"');
    expect(contextNameProblem('ℕ')).toBe('must be written as Python reads it (NFKC): "N"');
    expect(contextNameProblem('ｘ')).toBe('must be written as Python reads it (NFKC): "x"');
    // NFKC turns a fullwidth keyword into the keyword: refused either way, never stored as a name.
    expect(contextNameProblem('ｉｆ')).toBe('must be written as Python reads it (NFKC): "if"');
    expect(contextNameProblem('é')).toBeNull(); // already composed
  });

  it('refuses keywords, dunder names and builtins', () => {
    for (const kw of ['class', 'None', 'True', 'async', 'await', 'lambda']) expect(contextNameProblem(kw), kw).toBe('is a Python keyword');
    expect(contextNameProblem('__x')).toBe('must not start with __ (reserved for Python and the runner)');
    expect(contextNameProblem('__builtins__')).toBe('must not start with __ (reserved for Python and the runner)');
    expect(contextNameProblem('print')).toBe('is the name of the Python builtin print: the variable would hide it from the code; choose another name, such as print_');
    for (const name of ['len', 'id', 'type', 'input', 'max', 'ExceptionGroup', 'ValueError', 'Ellipsis', 'exit']) expect(contextNameProblem(name), name).toMatch(/^is the name of the Python builtin /);
    expect(contextNameProblem('_x_')).toBeNull();
  });

  it('keeps its lists to what Python has', () => {
    expect(PYTHON_KEYWORDS.size).toBe(35);
    for (const soft of ['match', 'case', 'type', '_']) expect(PYTHON_KEYWORDS.has(soft), soft).toBe(false);
    expect(PYTHON_BUILTINS.has('print') && PYTHON_BUILTINS.has('aiter') && PYTHON_BUILTINS.has('BaseExceptionGroup')).toBe(true);
    expect([...PYTHON_BUILTINS].every((n) => !n.startsWith('__'))).toBe(true);
  });
});

describe('CONTEXT_NAME_PATTERN (what the JSON Schemas show)', () => {
  const refusedByPatternToo = ['1x', 'a-b', 'a b', '', 'class', 'None', '__x', '__builtins__', '٣x', '·a'];
  // What a pattern cannot say: the check refuses these, the pattern lets them through.
  const refusedByCheckOnly = ['print', 'len', 'ﬁle', 'ℕ', 'x'.repeat(129)];

  it('agrees with the check wherever a pattern can', () => {
    for (const name of accepted) expect(CONTEXT_NAME_PATTERN.test(name), name).toBe(true);
    for (const name of refusedByPatternToo) expect(CONTEXT_NAME_PATTERN.test(name), name).toBe(false);
    for (const name of refusedByCheckOnly) {
      expect(CONTEXT_NAME_PATTERN.test(name), name).toBe(true);
      expect(contextNameProblem(name), name).not.toBeNull();
    }
  });

  it('works as JSON Schema patterns are read: its source with the u flag', () => {
    const again = new RegExp(CONTEXT_NAME_PATTERN.source, 'u');
    expect(accepted.every((n) => again.test(n))).toBe(true);
    expect(again.test('class')).toBe(false);
  });
});

describe('ContextName in the schemas', () => {
  it('is the key of the HTTP request context, with the reason as the issue', () => {
    const ok = ExecutionRequest.safeParse({ code: 'x', context: { café: 1, π: [1, 2] } });
    expect(ok.success).toBe(true);
    const bad = ExecutionRequest.safeParse({ code: 'x', context: { print: 1, '1x': 2 } });
    expect(bad.success).toBe(false);
    const keyIssues = bad.error!.issues.filter((i) => i.code === 'invalid_key');
    expect(keyIssues.map((i) => [i.path.join('.'), (i as { issues: Array<{ message: string }> }).issues[0]!.message])).toEqual([
      ['context.print', expect.stringContaining('builtin print')],
      ['context.1x', 'must be a Python identifier, which cannot start with a digit'],
    ]);
  });

  it('shows the pattern and the rule in the JSON Schema of the HTTP request', () => {
    const schema = z.toJSONSchema(ExecutionRequest, { io: 'input' }) as unknown as { properties: { context: Record<string, unknown> } };
    expect(schema.properties.context).toMatchObject({
      type: 'object',
      propertyNames: { type: 'string', pattern: CONTEXT_NAME_PATTERN.source, maxLength: 128 },
      description: expect.stringContaining('not the name of a Python builtin'),
    });
    expect(ContextName.safeParse('π').success).toBe(true);
  });
});
