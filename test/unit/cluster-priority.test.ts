import { describe, expect, it } from 'vitest';
import { BACKGROUND_PRIORITY, MAX_PRIORITY, priorityOf } from '../../src/cluster/queue-dispatch.ts';

describe('the queue priority of an execution', () => {
  it('is its tenant count in flight, at least 1', () => {
    expect(priorityOf(0, false)).toBe(1);
    expect(priorityOf(7, false)).toBe(7);
  });

  it('puts every background item behind every interactive run', () => {
    expect(priorityOf(1, true)).toBeGreaterThan(priorityOf(900_000, false));
    expect(priorityOf(5_000_000, false)).toBeLessThan(BACKGROUND_PRIORITY);
    expect(priorityOf(1, true)).toBe(BACKGROUND_PRIORITY + 1);
  });

  it('stays within what BullMQ accepts', () => {
    expect(priorityOf(Number.POSITIVE_INFINITY, false)).toBe(MAX_PRIORITY);
    expect(priorityOf(10_000_000, true)).toBe(MAX_PRIORITY);
  });
});
