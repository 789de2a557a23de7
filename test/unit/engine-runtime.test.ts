import { describe, expect, it } from 'vitest';
import { knownRuntimes, resolveRuntime } from '../../src/engine/runtime.ts';

describe('knownRuntimes', () => {
  it('keeps only runc and runsc, in that order', () => {
    expect(knownRuntimes(['io.containerd.runc.v2', 'runsc', 'kata', 'runc', 'nvidia'])).toEqual(['runc', 'runsc']);
  });

  it('is empty when the engine offers neither', () => {
    expect(knownRuntimes([])).toEqual([]);
    expect(knownRuntimes(['crun', 'RUNC', 'runsc-debug'])).toEqual([]);
  });

  it('keeps runsc alone', () => {
    expect(knownRuntimes(['runsc'])).toEqual(['runsc']);
  });
});

describe('resolveRuntime', () => {
  it('auto prefers runsc when both are offered', () => {
    expect(resolveRuntime('auto', ['runc', 'runsc'])).toBe('runsc');
    expect(resolveRuntime('auto', ['runsc', 'runc'])).toBe('runsc');
  });

  it('auto falls back to runc', () => {
    expect(resolveRuntime('auto', ['runc'])).toBe('runc');
  });

  it('auto takes runsc alone', () => {
    expect(resolveRuntime('auto', ['runsc'])).toBe('runsc');
  });

  it('auto fails when neither is offered, saying what the engine has', () => {
    expect(() => resolveRuntime('auto', [])).toThrow('the Docker engine offers neither runc nor runsc (it has: none)');
  });

  it('an explicit choice that is offered is used', () => {
    expect(resolveRuntime('runc', ['runc', 'runsc'])).toBe('runc');
    expect(resolveRuntime('runsc', ['runc', 'runsc'])).toBe('runsc');
  });

  it('explicit runsc that is missing fails and points at gVisor', () => {
    expect(() => resolveRuntime('runsc', ['runc'])).toThrow(/gVisor/);
    expect(() => resolveRuntime('runsc', ['runc'])).toThrow(/^engine\.runtime is runsc, but the Docker engine does not offer it/);
  });

  it('explicit runc that is missing fails without the gVisor hint', () => {
    let message = '';
    try {
      resolveRuntime('runc', ['runsc']);
    } catch (e) {
      message = e instanceof Error ? e.message : String(e);
    }
    expect(message).toBe('engine.runtime is runc, but the Docker engine does not offer it');
  });

  it('works on what knownRuntimes leaves of the engine\'s list', () => {
    expect(resolveRuntime('auto', knownRuntimes(['io.containerd.runc.v2', 'runc']))).toBe('runc');
    expect(() => resolveRuntime('auto', knownRuntimes(['io.containerd.runc.v2']))).toThrow(/neither runc nor runsc/);
  });
});
