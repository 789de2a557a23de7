// Who is asking. Every ExecutionService method takes a Caller as its first argument: the HTTP edge
// builds it from the API key (or the local-mode caller when no key exists), and the service scopes,
// clamps and meters by it. Explicit, not ambient, so a new route that forgets it does not compile.

/** A tenant's own ceilings; null means "only the server's". */
export interface TenantLimits {
  /** Executions of the tenant in flight (running or waiting) at once; more get 429. */
  maxConcurrency: number | null;
  /** Requests per minute (any route but the health checks); more get 429. */
  ratePerMinute: number | null;
  maxTimeoutMs: number | null;
  maxMemoryMb: number | null;
  maxCpus: number | null;
}

export interface Caller {
  /** The tenant the caller's executions, history and usage belong to. */
  tenant: string;
  /** The API key's public id; null in local mode. */
  keyId: string | null;
  /** Sees every tenant's executions, stats and usage. */
  admin: boolean;
  limits: TenantLimits;
}

/** The tenant of executions run without API keys (local mode, and history from before tenancy). */
export const LOCAL_TENANT = 'local';

export const NO_TENANT_LIMITS: TenantLimits = Object.freeze({
  maxConcurrency: null,
  ratePerMinute: null,
  maxTimeoutMs: null,
  maxMemoryMb: null,
  maxCpus: null,
});

/** Local mode: no keys exist and pybox only listens on loopback, so whoever connects is the operator. */
export const LOCAL_CALLER: Caller = Object.freeze({ tenant: LOCAL_TENANT, keyId: null, admin: true, limits: NO_TENANT_LIMITS });

/** The tenant whose data a caller may see: its own, or every tenant's (undefined) for an admin. */
export function visibleTenant(caller: Caller): string | undefined {
  return caller.admin ? undefined : caller.tenant;
}

/** Tenant names: what keys are created with and what usage reports show. */
export const TENANT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
