// Waiting in the client: between retries, polls and reconnections, always abortable.
import { PyboxClientError } from './errors.ts';

/** Retry-After values above this are not waited for: the error goes to the caller. */
export const MAX_RETRY_WAIT_S = 30;

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(timer), reject(signal.reason)), { once: true });
  });

/** Seconds to wait before retrying after `e`: only a 429 or 503 whose Retry-After is at most MAX_RETRY_WAIT_S; else undefined. */
export function retryWaitS(e: unknown): number | undefined {
  if (!(e instanceof PyboxClientError) || (e.status !== 429 && e.status !== 503)) return undefined;
  const wait = e.retryAfterS;
  return wait !== undefined && wait <= MAX_RETRY_WAIT_S ? wait : undefined;
}
