// Validates a JUnit report with xmllint against the schema of test/fixtures/junit/junit.xsd
// (xmllint comes from scripts/ensure-xmllint.sh, which `npm test`'s set-up runs).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

export const JUNIT_XSD = join(import.meta.dirname, '../fixtures/junit/junit.xsd');

export function xmllint(report: string): { ok: boolean; output: string } {
  const r = spawnSync('xmllint', ['--noout', '--schema', JUNIT_XSD, report], { encoding: 'utf8' });
  if (r.error) throw new Error(`xmllint is not installed (scripts/ensure-xmllint.sh): ${r.error.message}`);
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}
