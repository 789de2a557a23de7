// Waiting in the client: between retries, polls and reconnections, always abortable.

/** Retry-After values above this are not waited for: the error goes to the caller. */
export const MAX_RETRY_WAIT_S = 30;

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(timer), reject(signal.reason)), { once: true });
  });
