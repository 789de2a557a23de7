// The names a `context` variable may have. The runner stores each key as a global of the program
// exactly as sent, so a key is only useful when the code can write it: a Python identifier, in the
// form Python's parser reduces it to (NFKC), that is not a keyword. A key named like a builtin
// (`print`, `len`, `id`…) would hide that builtin from the whole program and break it in ways far
// from the cause, so such keys are refused up front with a message naming the builtin. Dunder
// names are the runner's own (`__builtins__`, `__file__`).
//
// One module for every surface: the HTTP request schema and the tool input schema both build on
// ContextName, so they accept, refuse and describe the same keys.
import { z } from 'zod';

/** Python 3's hard keywords (keyword.kwlist). Soft keywords (match, case, type, _) are ordinary names. */
export const PYTHON_KEYWORDS: ReadonlySet<string> = new Set(
  ('False None True and as assert async await break class continue def del elif else except finally for from ' +
    'global if import in is lambda nonlocal not or pass raise return try while with yield').split(' '),
);

/**
 * The names in the sandbox Python's `builtins` module (dir(builtins), dunder names aside, as the
 * image's CPython 3.11 lists them with `site` loaded). test/agents checks it against the image.
 */
export const PYTHON_BUILTINS: ReadonlySet<string> = new Set(
  (
    'ArithmeticError AssertionError AttributeError BaseException BaseExceptionGroup BlockingIOError BrokenPipeError ' +
    'BufferError BytesWarning ChildProcessError ConnectionAbortedError ConnectionError ConnectionRefusedError ' +
    'ConnectionResetError DeprecationWarning EOFError Ellipsis EncodingWarning EnvironmentError Exception ' +
    'ExceptionGroup False FileExistsError FileNotFoundError FloatingPointError FutureWarning GeneratorExit IOError ' +
    'ImportError ImportWarning IndentationError IndexError InterruptedError IsADirectoryError KeyError ' +
    'KeyboardInterrupt LookupError MemoryError ModuleNotFoundError NameError None NotADirectoryError NotImplemented ' +
    'NotImplementedError OSError OverflowError PendingDeprecationWarning PermissionError ProcessLookupError ' +
    'RecursionError ReferenceError ResourceWarning RuntimeError RuntimeWarning StopAsyncIteration StopIteration ' +
    'SyntaxError SyntaxWarning SystemError SystemExit TabError TimeoutError True TypeError UnboundLocalError ' +
    'UnicodeDecodeError UnicodeEncodeError UnicodeError UnicodeTranslateError UnicodeWarning UserWarning ValueError ' +
    'Warning ZeroDivisionError abs aiter all anext any ascii bin bool breakpoint bytearray bytes callable chr ' +
    'classmethod compile complex copyright credits delattr dict dir divmod enumerate eval exec exit filter float ' +
    'format frozenset getattr globals hasattr hash help hex id input int isinstance issubclass iter len license list ' +
    'locals map max memoryview min next object oct open ord pow print property quit range repr reversed round set ' +
    'setattr slice sorted staticmethod str sum super tuple type vars zip'
  ).split(' '),
);

const KEYWORD_ALTERNATION = [...PYTHON_KEYWORDS].join('|');

/**
 * Python's identifier syntax (`str.isidentifier()`: XID_Start or `_`, then XID_Continue), minus
 * the keywords and dunder names. What it cannot say (builtins, NFKC form) contextNameProblem adds.
 * Written for JSON Schema too, whose patterns are ECMA-262 regular expressions in Unicode mode.
 * Node's Unicode is newer than the sandbox Python's: a letter assigned since is accepted here and
 * merely unreachable from the code there (checked over every code point against CPython 3.11:
 * Python accepts nothing this refuses).
 */
export const CONTEXT_NAME_PATTERN = new RegExp(`^(?!(?:${KEYWORD_ALTERNATION})$)(?!__)[\\p{XID_Start}_]\\p{XID_Continue}*$`, 'u');

const IDENTIFIER = /^[\p{XID_Start}_]\p{XID_Continue}*$/u;

/** Most characters of a context name; Python has no limit, but no program needs more. */
export const MAX_CONTEXT_NAME_LENGTH = 128;

/** Why `name` cannot be a context variable's name, as a sentence fragment; null when it can. */
export function contextNameProblem(name: string): string | null {
  if (name.length === 0) return 'must not be empty';
  if (name.length > MAX_CONTEXT_NAME_LENGTH) return `must be at most ${MAX_CONTEXT_NAME_LENGTH} characters long`;
  if (!IDENTIFIER.test(name)) {
    return /^\p{Nd}/u.test(name)
      ? 'must be a Python identifier, which cannot start with a digit'
      : 'must be a Python identifier (a letter or _, then letters, digits or _)';
  }
  const normal = name.normalize('NFKC');
  // Python reads `ﬁ` in code as `fi`: a key stored as sent could never be named by the code.
  if (normal !== name) return `must be written as Python reads it (NFKC): ${JSON.stringify(normal)}`;
  if (PYTHON_KEYWORDS.has(name)) return `is a Python keyword`;
  if (name.startsWith('__')) return 'must not start with __ (reserved for Python and the runner)';
  if (PYTHON_BUILTINS.has(name)) return `is the name of the Python builtin ${name}: the variable would hide it from the code; choose another name, such as ${name}_`;
  return null;
}

export const CONTEXT_NAME_RULE =
  'a Python identifier (non-ASCII letters as Python accepts them, in NFKC form), not a keyword, not the name of ' +
  'a Python builtin (print, len, id, type, input, max…), not starting with __';

/**
 * The key of a `context` record: the same schema for the HTTP API and the agent tools. The check
 * is contextNameProblem, for a message naming the exact reason; the JSON Schema shows the pattern
 * and the rule in words.
 */
export const ContextName = z
  .string()
  .superRefine((name, ctx) => {
    const problem = contextNameProblem(name);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  })
  // The rule in words goes with the record that uses it (its description), said once per schema.
  .meta({ pattern: CONTEXT_NAME_PATTERN.source, maxLength: MAX_CONTEXT_NAME_LENGTH });
