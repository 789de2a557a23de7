// The YAML manifest of a suite (pybox-tests.yaml, or any .yaml file given to `pybox test`):
//
//   defaults:                      # optional; for every program unless it says otherwise
//     timeoutMs: 5000              # the time limit of each case
//     memoryMb: 256
//     compare: trimmed             # exact | trimmed | tokens | float | regex
//     tolerance: {relative: 1e-6, absolute: 1e-9}
//   programs:
//     - program: stats/mean.py     # relative to the manifest's directory
//       name: mean                 # optional; default the path without .py
//       files: [data/numbers.txt, {path: data/other.csv, as: input.csv}]   # given to every case
//       timeoutMs: 2000
//       memoryMb: 128
//       compare: float
//       tolerance: {absolute: 0.001}
//       cases:                     # optional: without it, the convention files beside the program
//         - name: two numbers
//           stdin: "1 2\n"         # or stdinFile: cases/two.in
//           args: [--verbose]
//           expectedStdout: "1.5\n"   # or expectedStdoutFile: cases/two.out
//           expectedExitCode: 0
//           compare: regex
//           timeoutMs: 1000
//           files: [{path: cases/extra.txt, as: extra.txt}]
//
// Every local path must stay inside the manifest's directory. Errors name the manifest, the line
// (YAML syntax) or the field path (programs[2].cases[0].expectedExitCode) and what is wrong.
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, isAbsolute, relative, resolve, sep } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { CompareMode, FilePath, TestCase, Tolerance, type InputFile } from '../../core/schemas.ts';
import { inputFileFrom } from '../remote.ts';
import { conventionCases, SuiteError, type ProgramSpec } from './cases.ts';

export const MANIFEST_NAME = 'pybox-tests.yaml';

const LocalPath = z.string().min(1).max(1024);
const FileRef = z.union([LocalPath, z.strictObject({ path: LocalPath, as: FilePath.optional() })]);
const Limits = {
  timeoutMs: TestCase.shape.timeoutMs,
  memoryMb: z.int().min(1).max(1_048_576).optional(),
};

const ManifestCase = z
  .strictObject({
    name: TestCase.shape.name,
    stdin: TestCase.shape.stdin,
    stdinFile: LocalPath.optional(),
    args: z.array(z.union([z.string(), z.number()]).transform(String)).max(64).optional(),
    expectedStdout: TestCase.shape.expectedStdout,
    expectedStdoutFile: LocalPath.optional(),
    expectedExitCode: TestCase.shape.expectedExitCode,
    compare: CompareMode.optional(),
    tolerance: Tolerance.partial().optional(),
    timeoutMs: TestCase.shape.timeoutMs,
    files: z.array(FileRef).max(64).optional(),
  })
  .refine((c) => !(c.stdin !== undefined && c.stdinFile !== undefined), 'give stdin or stdinFile, not both')
  .refine((c) => !(c.expectedStdout !== undefined && c.expectedStdoutFile !== undefined), 'give expectedStdout or expectedStdoutFile, not both');

const ManifestProgram = z.strictObject({
  program: LocalPath.refine((p) => p.endsWith('.py'), 'must be a .py file'),
  name: z.string().min(1).max(200).regex(/^[^\p{Cc}]+$/u, 'must be printable').optional(),
  files: z.array(FileRef).max(64).optional(),
  ...Limits,
  compare: CompareMode.optional(),
  tolerance: Tolerance.partial().optional(),
  cases: z.array(ManifestCase).min(1).max(1000).optional(),
});

const Manifest = z.strictObject({
  defaults: z.strictObject({ ...Limits, compare: CompareMode.optional(), tolerance: Tolerance.partial().optional() }).optional(),
  programs: z.array(ManifestProgram).min(1),
});

type ManifestProgram = z.infer<typeof ManifestProgram>;

/** `a.b[2].c` for an issue's path. */
function pathText(path: ReadonlyArray<PropertyKey>): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`)).join('');
}

/** A path of the manifest, resolved inside its directory (links followed), or an error naming the field. */
function localPath(root: string, manifest: string, field: string, path: string): string {
  if (isAbsolute(path)) throw new SuiteError(`${manifest}: ${field}: "${path}" must be relative to the manifest's directory`);
  const full = resolve(root, path);
  if (!existsSync(full)) throw new SuiteError(`${manifest}: ${field}: no file "${path}"`);
  const real = realpathSync(full);
  const realRoot = realpathSync(root);
  if (real !== realRoot && !real.startsWith(realRoot + sep)) throw new SuiteError(`${manifest}: ${field}: "${path}" is outside the manifest's directory`);
  if (!statSync(real).isFile()) throw new SuiteError(`${manifest}: ${field}: "${path}" is not a file`);
  return full;
}

function inputFiles(root: string, manifest: string, field: string, refs: z.infer<typeof FileRef>[] | undefined): InputFile[] {
  return (refs ?? []).map((ref, i) => {
    const { path, as } = typeof ref === 'string' ? { path: ref, as: undefined } : ref;
    const full = localPath(root, manifest, `${field}[${i}]`, path);
    const name = as ?? (FilePath.safeParse(path).success ? path : basename(path));
    const checked = FilePath.safeParse(name);
    if (!checked.success) throw new SuiteError(`${manifest}: ${field}[${i}]: the name "${name}" ${checked.error.issues[0]?.message ?? 'is not allowed'}`);
    return inputFileFrom(full, name);
  });
}

/** A case with the comparison it is given (its own, else its program's, else the defaults'), where there is one. */
function withComparison(c: TestCase, compare: CompareMode | undefined, tolerance: Tolerance | undefined): TestCase {
  return { ...c, ...(compare ? { compare } : {}), ...(tolerance ? { tolerance } : {}) };
}

/** The programs a manifest names, with their cases; names are left unset where the manifest gives none. */
export function loadManifest(manifestPath: string, root: string): Array<Omit<ProgramSpec, 'name'> & { name?: string | undefined }> {
  const fromHere = relative(process.cwd(), manifestPath);
  const shown = fromHere && !fromHere.startsWith('..') ? fromHere : manifestPath;
  const text = readFileSync(manifestPath, 'utf8');
  const doc = parseDocument(text, { prettyErrors: false });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const before = text.slice(0, Math.min(e.pos[0], text.length));
    const line = before.split('\n').length;
    const col = before.length - before.lastIndexOf('\n');
    throw new SuiteError(`${shown}:${line}:${col}: not valid YAML: ${e.message.split('\n')[0]}`);
  }
  const parsed = Manifest.safeParse(doc.toJS());
  if (!parsed.success) {
    const lines = parsed.error.issues.slice(0, 5).map((i) => `${shown}: ${pathText(i.path) || 'the manifest'}: ${i.message}`);
    throw new SuiteError(lines.join('\n'));
  }
  const defaults = parsed.data.defaults ?? {};
  return parsed.data.programs.map((p: ManifestProgram, pi) => {
    const field = `programs[${pi}]`;
    const file = localPath(root, shown, `${field}.program`, p.program);
    const compare = p.compare ?? defaults.compare;
    const tolerance = p.tolerance ?? defaults.tolerance;
    const programTolerance = tolerance ? Tolerance.parse(tolerance) : undefined;
    const timeoutMs = p.timeoutMs ?? defaults.timeoutMs;
    let cases: TestCase[];
    if (p.cases === undefined) {
      const dir = resolve(file, '..');
      cases = conventionCases(dir, basename(file, '.py')).map((c) => withComparison(c, compare, programTolerance));
      if (cases.length === 0) throw new SuiteError(`${shown}: ${field}: ${p.program} has no cases: give cases: or put its .in/.out files beside it`);
    } else {
      cases = p.cases.map((c, ci) => {
        const cf = `${field}.cases[${ci}]`;
        const stdin = c.stdinFile !== undefined ? readFileSync(localPath(root, shown, `${cf}.stdinFile`, c.stdinFile), 'utf8') : c.stdin;
        const expectedStdout = c.expectedStdoutFile !== undefined ? readFileSync(localPath(root, shown, `${cf}.expectedStdoutFile`, c.expectedStdoutFile), 'utf8') : c.expectedStdout;
        const files = inputFiles(root, shown, `${cf}.files`, c.files);
        const built: TestCase = {
          ...(c.name !== undefined ? { name: c.name } : {}),
          ...(stdin !== undefined ? { stdin } : {}),
          ...(c.args !== undefined ? { args: c.args } : {}),
          ...(files.length ? { files } : {}),
          ...(expectedStdout !== undefined ? { expectedStdout } : {}),
          ...(c.expectedExitCode !== undefined ? { expectedExitCode: c.expectedExitCode } : {}),
          ...(c.timeoutMs !== undefined ? { timeoutMs: c.timeoutMs } : {}),
        };
        return withComparison(built, c.compare ?? compare, c.tolerance ? Tolerance.parse(c.tolerance) : programTolerance);
      });
    }
    return {
      name: p.name,
      file,
      code: readFileSync(file, 'utf8'),
      files: inputFiles(root, shown, `${field}.files`, p.files),
      timeoutMs,
      memoryMb: p.memoryMb ?? defaults.memoryMb,
      cases,
    };
  });
}

