// The RateLimit header fields of the IETF httpapi draft: the structured `RateLimit-Policy` and
// `RateLimit` fields of its current revisions, and the `RateLimit-Limit`, `-Remaining` and `-Reset`
// fields of the earlier ones that most clients and proxies still read.
import type { RateLimitState } from '../core/errors.ts';

export function rateLimitHeaders(state: RateLimitState): Record<string, string> {
  const resetS = Math.max(0, Math.ceil(state.resetS));
  const remaining = Math.max(0, Math.floor(state.remaining));
  const window = state.windowS === undefined ? '' : `;w=${state.windowS}`;
  return {
    'RateLimit-Policy': `"${state.policy}";q=${state.quota}${window}`,
    RateLimit: `"${state.policy}";r=${remaining};t=${resetS}`,
    'RateLimit-Limit': String(state.quota),
    'RateLimit-Remaining': String(remaining),
    'RateLimit-Reset': String(resetS),
  };
}
