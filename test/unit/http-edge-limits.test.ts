// Limits at the HTTP edge that the security battery found missing: JSON nesting depth, and how often
// Node checks its header and request timeouts.
import { describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../../src/http/validate.ts';
import { checkingIntervalMs } from '../../src/server.ts';

const nested = (depth: number, open = '[', close = ']') => JSON.parse(open.repeat(depth) + close.repeat(depth)) as unknown;

describe('nestsDeeperThan', () => {
  it('counts arrays and objects, not scalars, and needs no recursion for any depth', () => {
    expect(nestsDeeperThan(1, 0)).toBe(false);
    expect(nestsDeeperThan('x', 0)).toBe(false);
    expect(nestsDeeperThan([], 0)).toBe(true);
    expect(nestsDeeperThan([], 1)).toBe(false);
    expect(nestsDeeperThan(nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH)).toBe(false);
    expect(nestsDeeperThan(nested(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH)).toBe(true);
    expect(nestsDeeperThan(nested(1_000_000), MAX_JSON_DEPTH)).toBe(true);
    expect(nestsDeeperThan(JSON.parse('{"a":'.repeat(100) + '1' + '}'.repeat(100)), MAX_JSON_DEPTH)).toBe(true);
    // Wide is fine; only depth counts.
    expect(nestsDeeperThan({ code: 'x', context: { a: Array.from({ length: 10_000 }, () => [1, [2]]) } }, 5)).toBe(false); // five levels
  });
});

describe('checkingIntervalMs', () => {
  it('checks well within the shorter timeout, at most every second, at least every 100 ms', () => {
    expect(checkingIntervalMs({ headersTimeoutMs: 10_000, requestTimeoutMs: 30_000 })).toBe(1000);
    expect(checkingIntervalMs({ headersTimeoutMs: 1000, requestTimeoutMs: 2000 })).toBe(250);
    expect(checkingIntervalMs({ headersTimeoutMs: 1000, requestTimeoutMs: 100 })).toBe(100);
  });
});
