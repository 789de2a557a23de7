// The JUnit XML report of a suite, as CI servers read it: <testsuites>, a <testsuite> per program,
// a <testcase> per case. failed -> <failure message type="failed"> with the expected and actual
// output; error/timeout/oom/output_limit -> <error type="<verdict>">; not_run -> <skipped>. A
// program whose execution did not complete (a syntax error, a whole-sandbox limit) or that pybox
// could not run gets one more testcase, "(execution)", with an <error>, so the report is never
// green for a program that did not run. Case output goes to <system-out>/<system-err>, clipped.
import { writeFileSync } from 'node:fs';
import junitReportBuilder, { type Builder } from 'junit-report-builder';
import type { TestResult } from '../../core/schemas.ts';
import type { ProgramOutcome } from './runner.ts';

/** Output kept per stream and case in the report (the server already caps it at limits.testOutputBytes). */
const OUTPUT_CHARS = 16_384;

/**
 * Text for a CDATA section. The XML writer under junit-report-builder splits only the first "]]>"
 * of a section; a second one would end it early and let program output into the markup. Each is
 * written "]] >" instead: a report is for reading, and the results keep the exact output.
 */
function cdata(text: string): string {
  return text.replaceAll(']]>', ']] >');
}

function clipped(text: string, max = OUTPUT_CHARS): string {
  return cdata(text.length <= max ? text : `${text.slice(0, max)}\n[… ${text.length - max} more characters]`);
}

const VERDICT_WORDS: Partial<Record<TestResult['verdict'], string>> = {
  timeout: 'stopped at its time limit',
  oom: 'out of memory',
  output_limit: 'wrote more output than allowed',
  not_run: 'not run',
};

function caseMessage(t: TestResult): string {
  if (t.mismatch) return t.mismatch.message;
  if (t.error) return `${t.error.type}: ${t.error.message}`;
  if (t.message) return t.message;
  if (t.verdict === 'error') return `exited with ${t.exitCode !== null ? `code ${t.exitCode}` : `signal ${t.signal ?? '?'}`}`;
  return VERDICT_WORDS[t.verdict] ?? t.verdict;
}

function failureBody(t: TestResult): string {
  if (!t.mismatch) return cdata(caseMessage(t));
  const where = t.mismatch.line !== null ? `first difference on line ${t.mismatch.line}\n` : '';
  return `${where}expected:\n${clipped(t.mismatch.expected, 4096)}\nactual:\n${clipped(t.mismatch.actual, 4096)}`;
}

/** A new report. The package is CommonJS: at run time its default import is the builder itself, while its types describe the module. */
function newReport(): Builder {
  const loaded = junitReportBuilder as unknown as Builder & { default?: Builder };
  return (loaded.default ?? loaded).newBuilder();
}

/** The report as XML text. `name` names the whole run (the suite's directory). */
export function junitXml(outcomes: ProgramOutcome[], name: string, at: Date = new Date()): string {
  const report = newReport().name(name);
  for (const o of outcomes) {
    const suite = report.testSuite().name(o.program.name).timestamp(at).time(o.wallMs / 1000);
    suite.property('file', o.program.file);
    if (o.result) suite.property('executionId', o.result.id);
    const r = o.result;
    if (!r || o.verdict === 'unrun' || r.status !== 'completed') {
      const why = o.problem ?? (r?.error ? `${r.error.type}: ${r.error.message}` : `the execution ended ${r?.status ?? 'without a result'}`);
      const content = cdata([r?.error?.text, r?.error?.caret, r?.error?.traceback].filter((x): x is string => !!x).join('\n'));
      suite
        .testCase()
        .className(o.program.name)
        .name('(execution)')
        .error(why, o.verdict === 'unrun' ? 'not_run' : (r?.status ?? 'error'), content || undefined);
    }
    for (const t of r?.tests ?? []) {
      const tc = suite.testCase().className(o.program.name).name(t.name).time(t.durationMs / 1000);
      if (t.verdict === 'failed') tc.failure(caseMessage(t), 'failed').stacktrace(failureBody(t));
      else if (t.verdict === 'not_run') tc.skipped();
      else if (t.verdict !== 'passed') tc.error(caseMessage(t), t.verdict, t.error?.traceback ? clipped(t.error.traceback) : undefined);
      if (t.stdout) tc.standardOutput(clipped(t.stdout) + (t.truncated.stdout ? '\n[output cut by pybox]' : ''));
      if (t.stderr) tc.standardError(clipped(t.stderr) + (t.truncated.stderr ? '\n[output cut by pybox]' : ''));
    }
  }
  return report.build();
}

export function writeJunit(path: string, outcomes: ProgramOutcome[], name: string): void {
  writeFileSync(path, junitXml(outcomes, name));
}
