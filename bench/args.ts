// The bench's command line: which scenarios, under which runtimes, with how many samples. Pure, so
// the parsing is unit-tested; run.ts turns the result into work.
import { RUNTIMES, type RuntimeName } from '../src/core/schemas.ts';

export const SCENARIOS = [
  'baseline',
  'docker-run',
  'ceiling',
  'cold',
  'paced',
  'science',
  'back-to-back',
  'sustained',
  'breakdown',
  'cluster',
  'burst',
  'cases',
  'sessions',
] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface Counts {
  /** Samples per latency row (cold, back-to-back). */
  samples: number;
  /** Requests in the paced print(1) row (one every pacedIntervalMs). */
  paced: number;
  /** Requests in the numpy+pandas row (one every scienceIntervalMs). */
  science: number;
  /** docker run --rm samples per runtime. */
  dockerRun: number;
  /** Cold runs taken apart phase by phase. */
  breakdown: number;
  /** Requests of the sustained scenario, and how many clients send them without pause. */
  sustainedTotal: number;
  clients: number;
  /** Lifecycles of the engine ceiling, and how many run at once. */
  ceilingTotal: number;
  ceilingParallel: number;
  /** Requests of the burst (its own service process, runc). */
  burstTotal: number;
  /** Seconds each cluster throughput row sends without pause (`clients` clients). */
  clusterSeconds: number;
  /** Test cases in one execution, and as many separate executions to compare it with. */
  cases: number;
  /** How often the one execution with `cases` cases is timed (the separate executions: once less, at least once). */
  casesRepeats: number;
  /** Idle sessions opened at once to measure what one costs in memory. */
  sessions: number;
}

export interface BenchOptions {
  quick: boolean;
  /** Scenarios to run, in the order of SCENARIOS. */
  scenarios: Scenario[];
  /** Runtimes asked for; null: every one the engine offers. */
  runtimes: RuntimeName[] | null;
  counts: Counts;
  pacedIntervalMs: number;
  scienceIntervalMs: number;
  /** Warm sandboxes per configuration for the served scenarios; null: the service's default. */
  poolSize: number | null;
  help: boolean;
}

export const QUICK: Counts = {
  samples: 6,
  paced: 6,
  science: 3,
  dockerRun: 3,
  breakdown: 3,
  sustainedTotal: 24,
  clients: 16,
  ceilingTotal: 12,
  ceilingParallel: 8,
  burstTotal: 100,
  clusterSeconds: 8,
  cases: 100,
  casesRepeats: 2,
  sessions: 4,
};

export const FULL: Counts = {
  samples: 30,
  paced: 30,
  science: 20,
  dockerRun: 12,
  breakdown: 12,
  sustainedTotal: 160,
  clients: 16,
  ceilingTotal: 64,
  ceilingParallel: 8,
  burstTotal: 500,
  clusterSeconds: 30,
  cases: 100,
  casesRepeats: 5,
  sessions: 12,
};

/** The burst is slow and runc-only; a quick run leaves it out unless asked for by name. */
const NOT_QUICK: readonly Scenario[] = ['burst'];

const COUNT_FLAGS: Record<string, keyof Counts> = {
  '--samples': 'samples',
  '--paced': 'paced',
  '--science': 'science',
  '--docker-run': 'dockerRun',
  '--breakdown': 'breakdown',
  '--total': 'sustainedTotal',
  '--clients': 'clients',
  '--ceiling-total': 'ceilingTotal',
  '--ceiling-parallel': 'ceilingParallel',
  '--burst-total': 'burstTotal',
  '--cluster-seconds': 'clusterSeconds',
  '--cases': 'cases',
  '--cases-repeats': 'casesRepeats',
  '--sessions': 'sessions',
};

export const USAGE = `usage: npm run bench -- [--quick] [--only a,b] [--skip a,b] [--runtime runc,runsc] [counts]
  scenarios: ${SCENARIOS.join(', ')}
  counts:    ${Object.keys(COUNT_FLAGS).join(' N, ')} N
  pacing:    --paced-interval MS (default 500), --science-interval MS (default 1000)
  service:   --pool-size N (warm sandboxes per configuration, both runtimes; default: the service's)
  cluster:   one API node and one worker, then two, in this process on PostgreSQL and Redis
             (\`bash scripts/setup.sh test\` starts them; the scenario is skipped when they do not
             answer): paced print(1), taking turns with an all-in-one node in the same process
             (each every 2 × --paced-interval, --paced runs of each; default runtime), then
             --clients clients without pause for --cluster-seconds (default 30, quick 8) with one
             worker and with two (the second on the second engine when it answers)
  cases:     --cases N test cases of a small program (stdin in, a sum out) in one execution, run
             --cases-repeats times through the service (pool on); the same N inputs as a batch of
             N executions (POST /v1/batches, followed to the end); and N separate executions of the
             same program back-to-back, for reference`;

export class ArgsError extends Error {}

function list(flag: string, value: string | undefined): string[] {
  if (value === undefined || value.startsWith('--')) throw new ArgsError(`${flag} needs a value`);
  const items = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (items.length === 0) throw new ArgsError(`${flag} needs a value`);
  return items;
}

function positiveInt(flag: string, value: string | undefined, max = 100_000): number {
  if (value === undefined || !/^[0-9]+$/.test(value)) throw new ArgsError(`${flag} needs a whole number`);
  const n = Number(value);
  if (n < 1 || n > max) throw new ArgsError(`${flag} must be between 1 and ${max}`);
  return n;
}

function scenarioList(flag: string, value: string | undefined): Scenario[] {
  return list(flag, value).map((s) => {
    if (!(SCENARIOS as readonly string[]).includes(s)) throw new ArgsError(`unknown scenario "${s}" (known: ${SCENARIOS.join(', ')})`);
    return s as Scenario;
  });
}

/** Reads the bench's arguments (process.argv.slice(2)); throws ArgsError with a message for the user. */
export function parseArgs(argv: string[]): BenchOptions {
  let quick = false;
  let help = false;
  let only: Scenario[] | null = null;
  let skip: Scenario[] = [];
  let runtimes: RuntimeName[] | null = null;
  let pacedIntervalMs = 500;
  let scienceIntervalMs = 1000;
  let poolSize: number | null = null;
  const counts: Partial<Counts> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    // --flag=value is read as --flag value.
    const eq = arg.indexOf('=');
    const flag = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    const inline = arg.startsWith('--') && eq > 0 ? arg.slice(eq + 1) : undefined;
    const value = () => (inline !== undefined ? inline : argv[++i]);
    if (flag === '--quick') quick = true;
    else if (flag === '--help' || flag === '-h') help = true;
    else if (flag === '--only') only = scenarioList(flag, value());
    else if (flag === '--skip') skip = scenarioList(flag, value());
    else if (flag === '--runtime' || flag === '--runtimes') {
      runtimes = list(flag, value()).map((r) => {
        if (!(RUNTIMES as readonly string[]).includes(r)) throw new ArgsError(`unknown runtime "${r}" (known: ${RUNTIMES.join(', ')})`);
        return r as RuntimeName;
      });
      runtimes = RUNTIMES.filter((r) => runtimes!.includes(r));
    } else if (flag === '--paced-interval') pacedIntervalMs = positiveInt(flag, value(), 60_000);
    else if (flag === '--science-interval') scienceIntervalMs = positiveInt(flag, value(), 60_000);
    else if (flag === '--pool-size') poolSize = positiveInt(flag, value(), 256);
    else if (flag in COUNT_FLAGS) counts[COUNT_FLAGS[flag]!] = positiveInt(flag, value());
    else throw new ArgsError(`unknown argument "${arg}"\n${USAGE}`);
  }
  const wanted = only ?? SCENARIOS.filter((s) => !(quick && NOT_QUICK.includes(s)));
  const scenarios = SCENARIOS.filter((s) => wanted.includes(s) && !skip.includes(s));
  if (scenarios.length === 0 && !help) throw new ArgsError('no scenario left to run');
  return { quick, help, scenarios, runtimes, counts: { ...(quick ? QUICK : FULL), ...counts }, pacedIntervalMs, scienceIntervalMs, poolSize };
}
