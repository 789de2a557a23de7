// Which nodes are alive: each node writes a report of itself to Redis every heartbeat, with an
// expiry of three heartbeats, so a node that dies (or loses Redis) drops out of the list on its
// own. Readers parse every report: anyone who can write to Redis can write one.
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Clock, Logger } from '../core/ports.ts';
import { within } from './connection.ts';
import { RuntimeName } from '../core/schemas.ts';

export const NODE_ROLES = ['api', 'worker', 'all'] as const;
export type NodeRole = (typeof NODE_ROLES)[number];

/** Missed heartbeats after which a node's report expires. */
const MISSED_BEATS = 3;

/**
 * One node as it last reported itself. A plain object schema (unknown keys dropped, not refused),
 * so nodes of a newer version that report more can still be listed by older ones.
 */
export const NodeReport = z.object({
  nodeId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/),
  role: z.enum(NODE_ROLES),
  startedAt: z.string().max(64),
  seenAt: z.string().max(64),
  pid: z.int().min(0).max(2 ** 31),
  host: z.string().max(255),
  /** Executions it runs at once (0 for an API node). */
  slots: z.int().min(0).max(1_000_000),
  /** Executions it runs now. */
  running: z.int().min(0).max(1_000_000),
  /** Sessions it holds now, and the most it may hold (absent: it holds none). */
  sessions: z.int().min(0).max(1_000_000).optional(),
  maxSessions: z.int().min(0).max(1_000_000).optional(),
  runtime: RuntimeName.optional(),
  image: z.string().max(512).optional(),
  python: z.string().max(64).nullable().optional(),
  packages: z
    .record(z.string().max(128), z.string().max(128))
    .refine((p) => Object.keys(p).length <= 256, 'at most 256 packages')
    .optional(),
  /** Its Docker engine answers. */
  engine: z.boolean().optional(),
  /** Its sandbox image is present. */
  imageReady: z.boolean().optional(),
});
export type NodeReport = z.infer<typeof NodeReport>;

/** What a node says of itself at each heartbeat; the registry adds who and when. */
export type NodeStatus = Omit<NodeReport, 'nodeId' | 'role' | 'startedAt' | 'seenAt' | 'pid' | 'host'>;

/** Whether a node runs executions. */
export const runsExecutions = (n: Pick<NodeReport, 'role'>): boolean => n.role === 'worker' || n.role === 'all';

/** Whether a node holds sessions: it runs executions and said how many sessions it may hold. */
export const holdsSessions = (n: Pick<NodeReport, 'role' | 'maxSessions'>): boolean => runsExecutions(n) && (n.maxSessions ?? 0) > 0;

export interface ClusterRegistryDeps {
  redis: Redis;
  prefix: string;
  nodeId: string;
  role: NodeRole;
  heartbeatMs: number;
  clock: Clock;
  logger?: Logger | undefined;
}

/** Most reports read at once: the cluster is a handful of nodes, never this many. */
const MAX_NODES = 1000;

export class ClusterRegistry {
  private timer: NodeJS.Timeout | undefined;
  private startedAt: string | undefined;
  private beating: Promise<void> = Promise.resolve();

  constructor(private readonly deps: ClusterRegistryDeps) {}

  private get key(): string {
    return `${this.deps.prefix}:node:${this.deps.nodeId}`;
  }

  /** Reports this node now and every heartbeat until stop(); resolves once the first report is written. */
  async start(status: () => NodeStatus): Promise<void> {
    if (this.timer) return;
    this.startedAt = new Date(this.deps.clock.now()).toISOString();
    this.timer = setInterval(() => {
      // One beat at a time: a slow Redis must not pile writes up.
      this.beating = this.beating.then(() => this.beat(status));
    }, this.deps.heartbeatMs);
    this.timer.unref();
    this.beating = this.beat(status);
    await this.beating;
  }

  /** Stops reporting and removes this node's report: it leaves the list at once. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    // Bounded: with Redis away, the report expires on its own anyway.
    const bound = Math.max(1000, this.deps.heartbeatMs);
    await within(this.beating, bound, 'the last heartbeat').catch(() => {});
    await within(this.deps.redis.del(this.key), bound, 'removing the node').catch((e: unknown) => this.deps.logger?.warn('could not remove this node from the cluster registry', { error: e }));
  }

  /** The nodes alive now (their reports not expired), by node id. Throws when Redis does not answer. */
  async nodes(): Promise<NodeReport[]> {
    const { redis, prefix } = this.deps;
    const keys = new Set<string>();
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:node:*`, 'COUNT', 200);
      cursor = next;
      for (const k of batch) keys.add(k);
    } while (cursor !== '0' && keys.size < MAX_NODES);
    if (keys.size === 0) return [];
    const values = await redis.mget(...keys);
    const nodes: NodeReport[] = [];
    for (const v of values) {
      if (v === null) continue; // expired between SCAN and MGET
      const report = parseReport(v);
      if (report) nodes.push(report);
      else this.deps.logger?.warn('ignored a malformed node report in Redis');
    }
    return nodes.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  }

  private async beat(status: () => NodeStatus): Promise<void> {
    const { deps } = this;
    try {
      const report: NodeReport = {
        ...status(),
        nodeId: deps.nodeId,
        role: deps.role,
        startedAt: this.startedAt ?? new Date(deps.clock.now()).toISOString(),
        seenAt: new Date(deps.clock.now()).toISOString(),
        pid: process.pid,
        host: hostname().slice(0, 255),
      };
      await within(deps.redis.set(this.key, JSON.stringify(report), 'PX', deps.heartbeatMs * MISSED_BEATS), Math.max(1000, deps.heartbeatMs), 'a heartbeat');
    } catch (e) {
      deps.logger?.warn('could not report this node to the cluster registry', { error: e });
    }
  }
}

function parseReport(text: string): NodeReport | undefined {
  if (text.length > 64 * 1024) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const parsed = NodeReport.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}
