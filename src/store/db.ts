// Opens pybox's SQLite database and brings its schema up to date. Only src/store/ touches SQLite.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export type SqliteDatabase = Database.Database;

/**
 * Schema changes, in order. Entry i takes the schema from version i to i + 1 (tracked in
 * `PRAGMA user_version`). Never edit an entry that has shipped: append a new one.
 */
export const MIGRATIONS: readonly string[] = [
  // seq is the rowid, so newest-first order is an index walk and survives VACUUM; AUTOINCREMENT
  // stops a seq from being reused after pruning, which would make an old cursor skip new rows.
  // SQLite allows AUTOINCREMENT only on the INTEGER PRIMARY KEY, hence id is UNIQUE, not the key.
  `CREATE TABLE executions (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     id TEXT NOT NULL UNIQUE,
     status TEXT NOT NULL,
     success INTEGER NOT NULL CHECK (success IN (0, 1)),
     duration_ms REAL NOT NULL,
     created_at TEXT NOT NULL,
     finished_at TEXT NOT NULL,
     result TEXT NOT NULL
   );
   CREATE INDEX executions_status_seq ON executions (status, seq);
   CREATE INDEX executions_created_at ON executions (created_at);
   -- lets percentiles read the k-th duration by walking an index instead of sorting the table
   CREATE INDEX executions_duration ON executions (duration_ms);
   -- a row that the health check rewrites, to prove the database takes writes
   CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
  // Tenancy: every execution belongs to a tenant ('local' for runs without API keys, including
  // all history from before this step); keys are stored as SHA-256 hashes only; usage is counted
  // per tenant, UTC day and status in its own table, so pruning the history never loses it.
  `ALTER TABLE executions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'local';
   CREATE INDEX executions_tenant_seq ON executions (tenant, seq);
   CREATE INDEX executions_tenant_status_seq ON executions (tenant, status, seq);
   CREATE INDEX executions_tenant_duration ON executions (tenant, duration_ms);
   CREATE TABLE tenants (
     name TEXT PRIMARY KEY,
     max_concurrency INTEGER,
     rate_per_minute INTEGER,
     max_timeout_ms INTEGER,
     max_memory_mb INTEGER,
     max_cpus REAL,
     created_at TEXT NOT NULL
   );
   CREATE TABLE api_keys (
     id TEXT PRIMARY KEY,
     tenant TEXT NOT NULL REFERENCES tenants (name),
     hash BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
     admin INTEGER NOT NULL CHECK (admin IN (0, 1)),
     created_at TEXT NOT NULL,
     revoked_at TEXT
   );
   CREATE TABLE usage (
     tenant TEXT NOT NULL,
     day TEXT NOT NULL,
     status TEXT NOT NULL,
     executions INTEGER NOT NULL,
     wall_ms REAL NOT NULL,
     cpu_ms REAL NOT NULL,
     output_bytes INTEGER NOT NULL,
     PRIMARY KEY (tenant, day, status)
   ) WITHOUT ROWID;`,
  // Async executions and batches (issue 11), kept until they have run, so a restart loses none.
  // A job is an execution not run yet: queued, then running under a node's lease, then done (a batch
  // item stays, done, to list the batch; an async execution's row goes once it is done). done_seq
  // numbers a batch's completions from 1, what its event stream resumes from. Times are epoch ms.
  // The partial indexes keep the claim's walks to the jobs not done, however many batches ran.
  `CREATE TABLE batches (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     id TEXT NOT NULL UNIQUE,
     tenant TEXT NOT NULL,
     label TEXT,
     webhook_url TEXT,
     webhook_state TEXT CHECK (webhook_state IN ('pending', 'delivered', 'failed')),
     total INTEGER NOT NULL CHECK (total > 0),
     done INTEGER NOT NULL DEFAULT 0,
     by_status TEXT NOT NULL DEFAULT '{}',
     state TEXT NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'completed', 'cancelled')),
     cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
     next_seq INTEGER NOT NULL DEFAULT 1,
     created_at_ms INTEGER NOT NULL,
     finished_at_ms INTEGER
   );
   CREATE INDEX batches_tenant_seq ON batches (tenant, seq);
   CREATE INDEX batches_finished ON batches (finished_at_ms) WHERE finished_at_ms IS NOT NULL;
   CREATE TABLE jobs (
     seq INTEGER PRIMARY KEY,
     id TEXT NOT NULL UNIQUE,
     tenant TEXT NOT NULL,
     batch_id TEXT REFERENCES batches (id),
     idx INTEGER NOT NULL,
     request TEXT NOT NULL,
     request_id TEXT,
     webhook_url TEXT,
     state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
     owner TEXT,
     lease_until_ms INTEGER,
     not_before_ms INTEGER NOT NULL DEFAULT 0,
     created_at_ms INTEGER NOT NULL,
     status TEXT,
     done_seq INTEGER
   );
   CREATE UNIQUE INDEX jobs_batch_idx ON jobs (batch_id, idx) WHERE batch_id IS NOT NULL;
   CREATE UNIQUE INDEX jobs_batch_done_seq ON jobs (batch_id, done_seq) WHERE done_seq IS NOT NULL;
   CREATE INDEX jobs_open ON jobs (tenant, created_at_ms, seq) WHERE state <> 'done';
   CREATE INDEX jobs_running ON jobs (owner, lease_until_ms) WHERE state = 'running';
   CREATE TABLE webhook_deliveries (
     seq INTEGER PRIMARY KEY,
     id TEXT NOT NULL UNIQUE,
     tenant TEXT NOT NULL,
     url TEXT NOT NULL,
     batch_id TEXT,
     body TEXT NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_at_ms INTEGER NOT NULL,
     state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
     owner TEXT,
     lease_until_ms INTEGER,
     last_error TEXT,
     last_status INTEGER,
     created_at_ms INTEGER NOT NULL,
     finished_at_ms INTEGER
   );
   CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at_ms, seq) WHERE state = 'pending';
   CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at_ms) WHERE finished_at_ms IS NOT NULL;
   -- the signing key itself (it signs, so it cannot be kept as a hash)
   CREATE TABLE webhook_secrets (
     tenant TEXT PRIMARY KEY,
     secret BLOB NOT NULL CHECK (length(secret) = 32),
     created_at_ms INTEGER NOT NULL
   );`,
];

export interface OpenOptions {
  /** Open without write access: nothing is migrated, and the store reports itself unhealthy. */
  readonly?: boolean;
}

export function openDatabase(path: string, opts: OpenOptions = {}): SqliteDatabase {
  const readonly = opts.readonly ?? false;
  const inMemory = path === ':memory:';
  if (!inMemory && !readonly) mkdirSync(dirname(path), { recursive: true });
  let db: SqliteDatabase;
  try {
    db = new Database(path, { readonly, fileMustExist: readonly });
  } catch (e) {
    throw new Error(`cannot open the store database ${path}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  try {
    db.pragma('busy_timeout = 5000');
    db.pragma('foreign_keys = ON');
    db.pragma('synchronous = NORMAL'); // with WAL: durable across crashes of pybox, not of the OS
    if (!readonly) {
      db.pragma('journal_mode = WAL'); // readers never block the writer
      migrate(db);
    } else {
      const version = userVersion(db);
      if (version !== MIGRATIONS.length) {
        throw new Error(`the store database ${path} is at schema version ${version}, expected ${MIGRATIONS.length}; open it writable once to migrate it`);
      }
    }
  } catch (e) {
    db.close();
    throw e;
  }
  return db;
}

function migrate(db: SqliteDatabase): void {
  // One step per transaction, and the version is read inside it (IMMEDIATE takes the write lock
  // first), so two processes opening the same file never apply a step twice, and a crash mid-way
  // leaves the version at the last step that committed.
  const step = db.transaction((): boolean => {
    const version = userVersion(db);
    if (version > MIGRATIONS.length) {
      throw new Error(`the store database ${db.name} is at schema version ${version}, newer than this pybox knows (${MIGRATIONS.length})`);
    }
    const sql = MIGRATIONS[version];
    if (sql === undefined) return false;
    db.exec(sql);
    db.pragma(`user_version = ${version + 1}`);
    return true;
  });
  while (step.immediate()) {
    // applied one; look for the next
  }
}

function userVersion(db: SqliteDatabase): number {
  return db.pragma('user_version', { simple: true }) as number;
}
