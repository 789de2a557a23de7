// pybox's schema in PostgreSQL, brought up to date when a node connects. Every node of a cluster
// runs this at start-up, so it has to be safe when several start at once.
import type { Pool, PoolClient } from 'pg';
import { inTransaction } from './tx.ts';

/**
 * Schema changes, in order. Entry i takes the schema from version i to i + 1 (recorded as a row
 * of pybox_schema_migrations). Never edit an entry that has shipped: append a new one.
 *
 * The tables mirror SQLite's (store/db.ts), so both stores answer alike:
 * - result is the JSON text, not jsonb: jsonb refuses the \u0000 that JSON.stringify writes for a
 *   NUL byte of output, and would not hand back the text that was saved.
 * - Text that is compared or ordered (ids, tenants, statuses, days) is COLLATE "C": byte order,
 *   as SQLite's BINARY, whatever the database's default collation is.
 * - Times are timestamptz (what pruning by age compares); day is the UTC day a run finished,
 *   as 'YYYY-MM-DD' text, the form usage queries give their bounds in.
 * - seq is an identity column: it only grows and is never reused after pruning, so a cursor
 *   never skips newer rows.
 */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE executions (
     seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     id text COLLATE "C" NOT NULL UNIQUE,
     tenant text COLLATE "C" NOT NULL,
     status text COLLATE "C" NOT NULL,
     success boolean NOT NULL,
     duration_ms double precision NOT NULL,
     created_at timestamptz NOT NULL,
     finished_at timestamptz NOT NULL,
     result text NOT NULL
   );
   CREATE INDEX executions_status_seq ON executions (status, seq);
   CREATE INDEX executions_created_at ON executions (created_at);
   -- lets percentiles read the k-th duration by walking an index instead of sorting the table
   CREATE INDEX executions_duration ON executions (duration_ms);
   CREATE INDEX executions_tenant_seq ON executions (tenant, seq);
   CREATE INDEX executions_tenant_status_seq ON executions (tenant, status, seq);
   CREATE INDEX executions_tenant_duration ON executions (tenant, duration_ms);
   CREATE TABLE tenants (
     name text COLLATE "C" PRIMARY KEY,
     max_concurrency integer,
     rate_per_minute integer,
     max_timeout_ms integer,
     max_memory_mb integer,
     max_cpus double precision,
     created_at timestamptz NOT NULL
   );
   -- seq keeps the order keys were created in, for listing them
   CREATE TABLE api_keys (
     seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
     id text COLLATE "C" PRIMARY KEY,
     tenant text COLLATE "C" NOT NULL REFERENCES tenants (name),
     hash bytea NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
     admin boolean NOT NULL,
     created_at timestamptz NOT NULL,
     revoked_at timestamptz
   );
   -- per tenant, UTC day and status, apart from the history: pruning executions never loses usage
   CREATE TABLE usage (
     tenant text COLLATE "C" NOT NULL,
     day text COLLATE "C" NOT NULL,
     status text COLLATE "C" NOT NULL,
     executions bigint NOT NULL,
     wall_ms double precision NOT NULL,
     cpu_ms double precision NOT NULL,
     output_bytes bigint NOT NULL,
     PRIMARY KEY (tenant, day, status)
   );
   -- a row that the health check rewrites, to prove the database takes writes
   CREATE TABLE meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);`,
  // A save in one statement, so in one round trip (saveFunction says how).
  saveFunction('CREATE FUNCTION', ''),
  // Async executions and batches, webhook deliveries and secrets: SQLite's migration 3, to answer
  // alike (see store/db.ts). by_status is jsonb: counts only, never a program's text.
  `CREATE TABLE batches (
     seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     id text COLLATE "C" NOT NULL UNIQUE,
     tenant text COLLATE "C" NOT NULL,
     label text,
     webhook_url text,
     webhook_state text COLLATE "C" CHECK (webhook_state IN ('pending', 'delivered', 'failed')),
     total integer NOT NULL CHECK (total > 0),
     done integer NOT NULL DEFAULT 0,
     by_status jsonb NOT NULL DEFAULT '{}',
     state text COLLATE "C" NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'completed', 'cancelled')),
     cancel_requested boolean NOT NULL DEFAULT false,
     next_seq integer NOT NULL DEFAULT 1,
     created_at_ms bigint NOT NULL,
     finished_at_ms bigint
   );
   CREATE INDEX batches_tenant_seq ON batches (tenant, seq);
   CREATE INDEX batches_finished ON batches (finished_at_ms) WHERE finished_at_ms IS NOT NULL;
   CREATE TABLE jobs (
     seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     id text COLLATE "C" NOT NULL UNIQUE,
     tenant text COLLATE "C" NOT NULL,
     batch_id text COLLATE "C" REFERENCES batches (id),
     idx integer NOT NULL,
     request text NOT NULL,
     request_id text,
     webhook_url text,
     state text COLLATE "C" NOT NULL CHECK (state IN ('queued', 'running', 'done')),
     owner text COLLATE "C",
     lease_until_ms bigint,
     not_before_ms bigint NOT NULL DEFAULT 0,
     created_at_ms bigint NOT NULL,
     status text COLLATE "C",
     done_seq integer
   );
   CREATE UNIQUE INDEX jobs_batch_idx ON jobs (batch_id, idx) WHERE batch_id IS NOT NULL;
   CREATE UNIQUE INDEX jobs_batch_done_seq ON jobs (batch_id, done_seq) WHERE done_seq IS NOT NULL;
   CREATE INDEX jobs_open ON jobs (tenant, created_at_ms, seq) WHERE state <> 'done';
   CREATE INDEX jobs_running ON jobs (owner, lease_until_ms) WHERE state = 'running';
   CREATE TABLE webhook_deliveries (
     seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     id text COLLATE "C" NOT NULL UNIQUE,
     tenant text COLLATE "C" NOT NULL,
     url text NOT NULL,
     batch_id text COLLATE "C",
     body text NOT NULL,
     attempts integer NOT NULL DEFAULT 0,
     next_at_ms bigint NOT NULL,
     state text COLLATE "C" NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
     owner text COLLATE "C",
     lease_until_ms bigint,
     last_error text,
     last_status integer,
     created_at_ms bigint NOT NULL,
     finished_at_ms bigint
   );
   CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at_ms, seq) WHERE state = 'pending';
   CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at_ms) WHERE finished_at_ms IS NOT NULL;
   -- the signing key itself (it signs, so it cannot be kept as a hash)
   CREATE TABLE webhook_secrets (
     tenant text COLLATE "C" PRIMARY KEY,
     secret bytea NOT NULL CHECK (octet_length(secret) = 32),
     created_at_ms bigint NOT NULL
   );`,
  // A save's commit no longer waits for PostgreSQL to flush its log to disk (synchronous_commit off,
  // for the save's own transaction only; jobs, batches and keys still wait). What a save wrote can
  // then be lost only if the PostgreSQL server itself crashes in the next fraction of a second
  // (three times wal_writer_delay at most), never half of it; a stop, a restart, or a pybox node
  // dying loses nothing. The embedded store keeps the same rule (SQLite's synchronous=NORMAL). It
  // takes a save from about 3.4 to 1.9 ms on the worker, on the way to every cluster answer.
  saveFunction('CREATE OR REPLACE FUNCTION', "\n     PERFORM set_config('synchronous_commit', 'off', true);"),
];

/**
 * pybox_save_execution (migration 2, then 4): a save in one statement, so in one round trip. The
 * statements a save made one by one in a transaction of the client's (the save lock, the insert,
 * the usage and the prune) run on the server, in the implicit transaction of the SELECT that calls
 * it. VOLATILE (the default): each statement takes a new snapshot, so those after the lock see every
 * save committed before it. 7310402562 is execution-store.ts's SAVE_LOCK: nodes of an older
 * version, which save statement by statement under the same lock, still take their turns with
 * these. An id stored already with this very result and tenant (a retry whose first answer was
 * lost) returns false and changes nothing; under another result it raises SQLSTATE PBX01.
 * `prelude` runs first, in the function's transaction.
 */
function saveFunction(create: string, prelude: string): string {
  return `${create} pybox_save_execution(
     p_id text, p_tenant text, p_status text, p_success boolean, p_duration_ms double precision,
     p_created_at timestamptz, p_finished_at timestamptz, p_result text,
     p_day text, p_cpu_ms double precision, p_output_bytes bigint,
     p_keep bigint, p_older_than timestamptz
   ) RETURNS boolean LANGUAGE plpgsql AS $fn$
   DECLARE
     new_seq bigint;
   BEGIN${prelude}
     PERFORM pg_advisory_xact_lock(7310402562);
     INSERT INTO executions (id, tenant, status, success, duration_ms, created_at, finished_at, result)
       VALUES (p_id, p_tenant, p_status, p_success, p_duration_ms, p_created_at, p_finished_at, p_result)
       ON CONFLICT (id) DO NOTHING
       RETURNING seq INTO new_seq;
     IF new_seq IS NULL THEN
       IF EXISTS (SELECT 1 FROM executions e WHERE e.id = p_id AND e.result = p_result AND e.tenant = p_tenant) THEN
         RETURN false;
       END IF;
       RAISE EXCEPTION USING ERRCODE = 'PBX01', MESSAGE = 'an execution with this id is already stored';
     END IF;
     INSERT INTO usage AS u (tenant, day, status, executions, wall_ms, cpu_ms, output_bytes)
       VALUES (p_tenant, p_day, p_status, 1, p_duration_ms, p_cpu_ms, p_output_bytes)
       ON CONFLICT (tenant, day, status) DO UPDATE SET
         executions = u.executions + 1,
         wall_ms = u.wall_ms + excluded.wall_ms,
         cpu_ms = u.cpu_ms + excluded.cpu_ms,
         output_bytes = u.output_bytes + excluded.output_bytes;
     -- seq only grows: the newest p_keep rows are those above new_seq - p_keep (see pruneIn).
     DELETE FROM executions WHERE seq <= new_seq - p_keep;
     IF p_older_than IS NOT NULL THEN
       DELETE FROM executions WHERE created_at < p_older_than;
     END IF;
     RETURN true;
   END
   $fn$;`;
}

/**
 * The advisory lock migrations run under (any fixed number; advisory locks are per database, so
 * only pybox nodes of the same database wait on each other).
 */
const MIGRATION_LOCK = 7_310_402_561;

/**
 * Applies the migrations this database lacks, all in one transaction under a transaction-level
 * advisory lock: nodes starting at once wait for each other instead of racing, the second finds
 * nothing left to do, and a failure leaves the schema as it was (PostgreSQL's DDL is transactional).
 * Returns the versions applied.
 */
export async function migrate(pool: Pool): Promise<number[]> {
  // READ COMMITTED whatever the database's default: each statement after the lock must see what
  // the node that held it before committed.
  return inTransaction(pool, 'BEGIN ISOLATION LEVEL READ COMMITTED', applyPending);
}

async function applyPending(client: PoolClient): Promise<number[]> {
  await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
  // Created under the lock, so two first starts never both try to create it.
  await client.query(
    `CREATE TABLE IF NOT EXISTS pybox_schema_migrations (
       version integer PRIMARY KEY,
       applied_at timestamptz NOT NULL DEFAULT now()
     )`,
  );
  const { rows } = await client.query<{ version: number | null }>('SELECT max(version) AS version FROM pybox_schema_migrations');
  const version = rows[0]?.version ?? 0;
  if (version > MIGRATIONS.length) {
    throw new Error(`the PostgreSQL store is at schema version ${version}, newer than this pybox knows (${MIGRATIONS.length})`);
  }
  const applied: number[] = [];
  for (let v = version; v < MIGRATIONS.length; v++) {
    await client.query(MIGRATIONS[v] as string);
    await client.query('INSERT INTO pybox_schema_migrations (version) VALUES ($1)', [v + 1]);
    applied.push(v + 1);
  }
  return applied;
}
