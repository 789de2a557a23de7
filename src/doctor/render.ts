// The doctor's report as a table for a terminal: one row per check, pass or FAIL, and a verdict.
import type { DoctorReport } from './doctor.ts';

export function renderDoctor(r: DoctorReport): string[] {
  const runtime = r.runtime === 'runsc' ? 'gVisor (runsc)' : 'runc';
  const width = Math.max(5, ...r.checks.map((c) => c.name.length));
  const row = (name: string, result: string, detail: string) => `  ${name.padEnd(width)}  ${result.padEnd(6)}  ${detail}`;
  const failed = r.checks.filter((c) => !c.ok);
  return [
    `pybox doctor: ${runtime}, image ${r.image}, host kernel ${r.hostKernel}; ${r.checks.length} checks in ${(r.durationMs / 1000).toFixed(1)} s`,
    '',
    row('CHECK', 'RESULT', 'DETAIL'),
    ...r.checks.map((c) => row(c.name, c.ok ? 'pass' : 'FAIL', c.detail)),
    '',
    failed.length === 0 ? `all ${r.checks.length} checks passed` : `${failed.length} of ${r.checks.length} checks FAILED: ${failed.map((c) => c.name).join(', ')}`,
  ];
}
