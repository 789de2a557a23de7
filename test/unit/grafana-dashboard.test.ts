// deploy/grafana/pybox-dashboard.json is built on pybox's own metrics: every PromQL expression in it
// names only series a node exposes (or PromQL's own functions and keywords), so a renamed metric
// cannot leave a panel silently empty.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PrometheusMetrics } from '../../src/metrics/prometheus.ts';
import { parseExposition } from '../support/exposition.ts';

interface Target {
  expr: string;
}
interface Panel {
  title: string;
  targets?: Target[];
}
interface Dashboard {
  panels: Panel[];
  templating: { list: Array<{ name: string; query: unknown }> };
}

const dashboard = JSON.parse(readFileSync('deploy/grafana/pybox-dashboard.json', 'utf8')) as Dashboard;

/** PromQL's functions, aggregations and keywords the dashboard may use. */
const PROMQL_WORDS = new Set(['sum', 'min', 'max', 'avg', 'count', 'rate', 'irate', 'increase', 'histogram_quantile', 'by', 'without', 'and', 'or', 'unless', 'label_values', 'on', 'ignoring', 'bool']);

/** Every series name a node with every part (engine, pool, cluster queue) exposes. */
async function exposedNames(): Promise<Set<string>> {
  const m = new PrometheusMetrics({ tenantLabels: [] });
  m.watchGate(1, () => ({ running: 0, queued: 0 }));
  m.watchPool(() => [{ config: { runtime: 'runc', memoryMb: 256, cpus: 1 }, ready: 1 }]);
  m.watchEngine(async () => true);
  m.watchClusterQueue(async () => 0);
  m.executionFinished({ status: 'completed', runtime: 'runc', durationMs: 1, queueWaitMs: 0 });
  m.poolTake('runc', true);
  m.sandboxStart('runc', true);
  m.sandboxStart('runc', false);
  m.engineError('create', true);
  m.httpRequest({ route: '/healthz', method: 'GET', status: 200, durationMs: 1 });
  m.rateLimited('x');
  return new Set(parseExposition(await m.render()).map((s) => s.name));
}

/** The names an expression refers to: label matchers, grouping labels, ranges, strings, numbers and variables removed. */
function namesIn(expr: string): string[] {
  const bare = expr
    // Grafana's label_values(metric, label): the second argument is a label.
    .replace(/label_values\(\s*([^,)]+)(?:,[^)]*)?\)/g, ' $1 ')
    .replace(/"(?:[^"\\]|\\.)*"/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, ' ')
    .replace(/\$\{?[A-Za-z_][A-Za-z0-9_]*\}?/g, ' ');
  return [...bare.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)].map((m) => m[0]).filter((w) => !PROMQL_WORDS.has(w));
}

const expressions = (d: Dashboard): Array<{ where: string; expr: string }> => [
  ...d.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: p.title, expr: t.expr }))),
  ...d.templating.list.flatMap((v) => {
    const q = v.query;
    const query = typeof q === 'object' && q !== null && 'query' in q ? String((q as { query: unknown }).query) : undefined;
    return query?.includes('(') ? [{ where: `variable ${v.name}`, expr: query }] : [];
  }),
];

describe('the Grafana dashboard', () => {
  it('has the panels operators asked for', () => {
    const titles = dashboard.panels.map((p) => p.title);
    for (const t of ['Executions by status', 'Execution duration (p50, p95)', 'Queue wait (p50, p95)', 'Running and queued', 'Warm pool hit ratio', 'Warm sandboxes by configuration', 'Container starts and start failures', 'HTTP requests by status', 'Rate-limit refusals by tenant']) {
      expect(titles).toContain(t);
    }
  });

  it('names only metrics pybox exposes in its expressions', async () => {
    const exposed = await exposedNames();
    const all = expressions(dashboard);
    expect(all.length).toBeGreaterThan(10);
    for (const { where, expr } of all) {
      const names = namesIn(expr);
      expect(names.length, `${where}: ${expr}`).toBeGreaterThan(0);
      for (const n of names) expect(exposed.has(n), `${where}: ${n} in ${expr}`).toBe(true);
    }
  });

  it('the check itself catches a name pybox does not expose', async () => {
    const exposed = await exposedNames();
    expect(namesIn('sum by (status) (rate(pybox_executions_totals{instance=~"$instance"}[$__rate_interval]))')).toEqual(['pybox_executions_totals']);
    expect(exposed.has('pybox_executions_totals')).toBe(false);
    expect(namesIn('histogram_quantile(0.95, sum by (le) (rate(pybox_execution_duration_seconds_bucket[5m])))')).toEqual(['pybox_execution_duration_seconds_bucket']);
  });
});
