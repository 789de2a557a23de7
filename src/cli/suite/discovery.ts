// Which programs a `pybox test PATH` runs, and with which cases. Two ways to say it, mixable:
//
// By convention, in a directory: a program X.py with its cases beside it,
//   X.in / X.out                one case (stdin, expected stdout), or
//   X.1.in / X.1.out, X.2.in…   several, run in the order of their numbers;
//   X.args / X.N.args           the case's arguments, one per line (optional).
// A case needs an .in or an .out file: without .in its stdin is empty; without .out it passes when
// the program exits 0. Compared `trimmed` (trailing spaces and final newlines ignored).
//
// By a YAML manifest (pybox-tests.yaml in the directory, or a .yaml/.yml file given as PATH):
// programs, their cases and limits, files, comparisons (see manifest.ts). A program the manifest
// names is run as the manifest says; the other X.py of the directory are still found by convention.
// A .py file with no case file and not in the manifest is not a test (a helper module): it is listed
// as skipped.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, relative, resolve } from 'node:path';
import { conventionCases, readText, SuiteError, type ProgramSpec } from './cases.ts';
import { loadManifest, MANIFEST_NAME } from './manifest.ts';

export { SuiteError, type ProgramSpec } from './cases.ts';

export interface Suite {
  /** The directory names are relative to. */
  root: string;
  programs: ProgramSpec[];
  /** .py files skipped because nothing says how to test them. */
  skipped: string[];
}

function programName(root: string, file: string): string {
  const rel = relative(root, file).split('\\').join('/');
  return rel.endsWith('.py') ? rel.slice(0, -3) : rel;
}

/** The .py files under `dir` (sub-directories too, in name order), hidden ones left out. */
function pythonFiles(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (entry.name.startsWith('.') || entry.name === '__pycache__' || entry.name === 'node_modules') continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...pythonFiles(path));
    else if (entry.isFile() && entry.name.endsWith('.py')) found.push(path);
  }
  return found;
}

/** The suite at `path`: a directory, a manifest file, or one .py program. */
export function discoverSuite(path: string): Suite {
  const target = resolve(path);
  if (!existsSync(target)) throw new SuiteError(`${path}: no such file or directory`);
  const stat = statSync(target);

  if (stat.isFile() && /\.ya?ml$/i.test(target)) {
    const root = dirname(target);
    return { root, programs: loadManifest(target, root).map((p) => ({ ...p, name: p.name ?? programName(root, p.file) })), skipped: [] };
  }
  if (stat.isFile() && extname(target) === '.py') {
    const root = dirname(target);
    const stem = basename(target, '.py');
    const cases = conventionCases(root, stem);
    if (cases.length === 0) throw new SuiteError(`${path}: no cases beside it (${stem}.in/${stem}.out or ${stem}.1.in/${stem}.1.out…)`);
    return { root, programs: [{ name: stem, file: target, code: readText(target), files: [], cases }], skipped: [] };
  }
  if (!stat.isDirectory()) throw new SuiteError(`${path}: not a directory, a .py program or a .yaml manifest`);

  const root = target;
  const manifestPath = join(root, MANIFEST_NAME);
  const fromManifest = existsSync(manifestPath) ? loadManifest(manifestPath, root) : [];
  const named = new Set(fromManifest.map((p) => p.file));
  const programs: ProgramSpec[] = fromManifest.map((p) => ({ ...p, name: p.name ?? programName(root, p.file) }));
  const skipped: string[] = [];
  for (const file of pythonFiles(root)) {
    if (named.has(file)) continue;
    const cases = conventionCases(dirname(file), basename(file, '.py'));
    if (cases.length === 0) skipped.push(relative(root, file));
    else programs.push({ name: programName(root, file), file, code: readText(file), files: [], cases });
  }
  const seen = new Set<string>();
  for (const p of programs) {
    if (seen.has(p.name)) throw new SuiteError(`${MANIFEST_NAME}: two programs are named "${p.name}"`);
    seen.add(p.name);
  }
  programs.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (programs.length === 0) throw new SuiteError(`${path}: no programs with cases found (X.py with X.in/X.out, or a ${MANIFEST_NAME})`);
  return { root, programs, skipped };
}
