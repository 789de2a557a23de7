// The parts of a suite both ways of describing one share: a program with its cases, the error a
// suite that cannot be read gives, and the cases of a program by the file convention (discovery.ts).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { InputFile, TestCase } from '../../core/schemas.ts';

/** One program of a suite: one execution, its cases run in one sandbox. */
export interface ProgramSpec {
  /** How it is named in the output and the report (its path relative to the suite, without .py). */
  name: string;
  /** The local file. */
  file: string;
  code: string;
  files: InputFile[];
  timeoutMs?: number | undefined;
  memoryMb?: number | undefined;
  cases: TestCase[];
}

/** A suite that cannot be read as it is: the message names the file and what is wrong. */
export class SuiteError extends Error {}

const CASE_FILE = /^(.+?)(?:\.(\d+))?\.(in|out|args)$/;

export function readText(path: string): string {
  return readFileSync(path, 'utf8');
}

/** The cases of X.py by convention, in the directory `dir`; empty when it has none. */
export function conventionCases(dir: string, stem: string, entries: string[] = readdirSync(dir)): TestCase[] {
  const byNumber = new Map<string, { in?: string; out?: string; args?: string }>();
  for (const entry of entries) {
    const m = CASE_FILE.exec(entry);
    if (!m || m[1] !== stem) continue;
    const key = m[2] ?? '';
    const slot = byNumber.get(key) ?? {};
    slot[m[3] as 'in' | 'out' | 'args'] = join(dir, entry);
    byNumber.set(key, slot);
  }
  if (byNumber.has('') && byNumber.size > 1) {
    throw new SuiteError(`${join(dir, stem)}.py: has both ${stem}.in/.out and numbered cases (${stem}.N.in/.out): use one or the other`);
  }
  const keys = [...byNumber.keys()].sort((a, b) => Number(a) - Number(b));
  const cases: TestCase[] = [];
  for (const key of keys) {
    const slot = byNumber.get(key)!;
    const name = key === '' ? stem : `${stem}.${key}`;
    if (slot.in === undefined && slot.out === undefined) {
      throw new SuiteError(`${slot.args}: arguments for a case that has neither ${name}.in nor ${name}.out`);
    }
    const args = slot.args !== undefined ? readText(slot.args).split('\n').filter((line, i, all) => !(line === '' && i === all.length - 1)) : undefined;
    cases.push({
      name,
      ...(slot.in !== undefined ? { stdin: readText(slot.in) } : {}),
      ...(slot.out !== undefined ? { expectedStdout: readText(slot.out) } : {}),
      ...(args !== undefined ? { args } : {}),
    });
  }
  return cases;
}

