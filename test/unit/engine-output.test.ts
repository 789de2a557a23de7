import { describe, expect, it } from 'vitest';
import { CappedCapture } from '../../src/engine/output.ts';

const bytes = (n: number, fill: number) => Buffer.alloc(n, fill);

describe('CappedCapture', () => {
  it('keeps everything below the cap and is not truncated', () => {
    const c = new CappedCapture(10);
    c.push(Buffer.from('abc'));
    c.push(Buffer.from('defg'));
    expect(c.text()).toBe('abcdefg');
    expect(c.totalBytes).toBe(7);
    expect(c.truncated).toBe(false);
  });

  it('keeps exactly the cap when the input ends right at it', () => {
    const c = new CappedCapture(6);
    c.push(Buffer.from('abc'));
    c.push(Buffer.from('def'));
    expect(c.text()).toBe('abcdef');
    expect(c.totalBytes).toBe(6);
    expect(c.truncated).toBe(false);
  });

  it('keeps exactly cap bytes across many pushes and counts every byte', () => {
    const c = new CappedCapture(1000);
    let expected = '';
    for (let i = 0; i < 300; i++) {
      const chunk = String.fromCharCode(97 + (i % 26)).repeat(7);
      c.push(Buffer.from(chunk));
      expected += chunk;
    }
    expect(c.totalBytes).toBe(2100);
    expect(c.text()).toBe(expected.slice(0, 1000));
    expect(Buffer.byteLength(c.text())).toBe(1000);
    expect(c.truncated).toBe(true);
  });

  it('counts bytes pushed after the cap is reached without keeping them', () => {
    const c = new CappedCapture(4);
    c.push(Buffer.from('abcdef'));
    c.push(Buffer.from('ghij'));
    c.push(Buffer.alloc(0));
    expect(c.text()).toBe('abcd');
    expect(c.totalBytes).toBe(10);
    expect(c.truncated).toBe(true);
  });

  it('copies pushed data: mutating the source buffer afterwards does not change the text', () => {
    const c = new CappedCapture(100);
    const socketBuffer = Buffer.from('hello world');
    c.push(socketBuffer.subarray(0, 5));
    socketBuffer.fill(0x58); // 'X'
    expect(c.text()).toBe('hello');
  });

  it('copies the part kept of a chunk cut by the cap', () => {
    const c = new CappedCapture(3);
    const src = Buffer.from('abcdef');
    c.push(src);
    src.fill(0x5a);
    expect(c.text()).toBe('abc');
  });

  it('decodes invalid UTF-8 to U+FFFD without throwing', () => {
    const c = new CappedCapture(100);
    c.push(Buffer.from([0x61, 0xff, 0xfe, 0x62]));
    expect(c.text()).toBe('a\uFFFD\uFFFDb');
  });

  it('decodes a multi-byte character cut at the cap to U+FFFD', () => {
    // "é" is 0xC3 0xA9; the cap of 2 keeps "a" and the first byte only.
    const c = new CappedCapture(2);
    c.push(Buffer.from('aé', 'utf8'));
    expect(c.totalBytes).toBe(3);
    expect(c.truncated).toBe(true);
    expect(c.text()).toBe('a\uFFFD');
  });

  it('joins a multi-byte character split across two pushes', () => {
    const c = new CappedCapture(100);
    const euro = Buffer.from('€', 'utf8'); // 3 bytes
    c.push(euro.subarray(0, 1));
    c.push(euro.subarray(1));
    expect(c.text()).toBe('€');
  });

  it('handles binary floods much larger than the cap', () => {
    const c = new CappedCapture(1024);
    for (let i = 0; i < 64; i++) c.push(bytes(65_536, i));
    expect(c.totalBytes).toBe(64 * 65_536);
    expect(c.truncated).toBe(true);
    expect(c.text()).toBe('\u0000'.repeat(1024));
  });
});
