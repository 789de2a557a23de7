import { describe, expect, it } from 'vitest';
import { buildPayload, type PayloadInput, type PayloadRequest } from '../../src/engine/archive.ts';
import { readTar } from './fakes.ts';

const request: PayloadRequest = {
  args: ['--n', '3', 'ünï'],
  env: { FOO: 'bar', EMPTY: '' },
  context: { data: [1, 2, { a: null }], name: 'x"y' },
  caps: { floodBytes: 1_000_000, maxFiles: 20, maxFileBytes: 5_242_880, outputBytes: 50_000 },
};

const binary = Buffer.from(Array.from({ length: 1500 }, (_, i) => (i * 37 + 11) % 256));

function input(overrides: Partial<PayloadInput> = {}): PayloadInput {
  return {
    code: 'print("héllo")\n',
    stdin: 'line 1\nline 2\n',
    files: [
      { path: 'data/blob.bin', data: binary },
      { path: 'notes.txt', data: Buffer.from('n\u00f6tes') },
      { path: 'empty', data: Buffer.alloc(0) },
    ],
    request,
    ...overrides,
  };
}

describe('buildPayload', () => {
  it('orders entries: request.json, stdin, main.py, then the files in request order', async () => {
    const entries = await readTar(await buildPayload(input()));
    expect(entries.map((e) => e.header.name)).toEqual(['.pybox/request.json', '.pybox/stdin', 'main.py', 'data/blob.bin', 'notes.txt', 'empty']);
  });

  it('leaves out .pybox/stdin when stdin is empty', async () => {
    const entries = await readTar(await buildPayload(input({ stdin: '' })));
    expect(entries.map((e) => e.header.name)).toEqual(['.pybox/request.json', 'main.py', 'data/blob.bin', 'notes.txt', 'empty']);
  });

  it('holds only request.json and main.py for a bare run', async () => {
    const entries = await readTar(await buildPayload(input({ stdin: '', files: [] })));
    expect(entries.map((e) => e.header.name)).toEqual(['.pybox/request.json', 'main.py']);
  });

  it('round-trips the request as JSON', async () => {
    const [req] = await readTar(await buildPayload(input()));
    expect(JSON.parse(req?.data.toString('utf8') ?? 'null')).toEqual(request);
  });

  it('keeps contents byte-exact: code and stdin as UTF-8, binary files untouched', async () => {
    const byName = new Map((await readTar(await buildPayload(input()))).map((e) => [e.header.name, e.data]));
    expect(byName.get('main.py')).toEqual(Buffer.from('print("héllo")\n', 'utf8'));
    expect(byName.get('.pybox/stdin')).toEqual(Buffer.from('line 1\nline 2\n'));
    expect(byName.get('data/blob.bin')?.equals(binary)).toBe(true);
    expect(byName.get('notes.txt')).toEqual(Buffer.from('n\u00f6tes'));
    expect(byName.get('empty')?.length).toBe(0);
  });

  it('makes every entry a regular file with mode 0644 and the size of its data', async () => {
    const entries = await readTar(await buildPayload(input()));
    expect(entries).toHaveLength(6);
    for (const e of entries) {
      expect(e.header.type, e.header.name).toBe('file');
      expect(e.header.mode, e.header.name).toBe(0o644);
      expect(e.header.size, e.header.name).toBe(e.data.length);
    }
  });

  it('is deterministic (mtime fixed)', async () => {
    const a = await buildPayload(input());
    const b = await buildPayload(input());
    expect(a.equals(b)).toBe(true);
    const entries = await readTar(a);
    for (const e of entries) expect(e.header.mtime?.getTime()).toBe(0);
  });

  it('ends with the tar end-of-archive marker (two zero blocks)', async () => {
    const tar = await buildPayload(input({ files: [] }));
    expect(tar.length % 512).toBe(0);
    expect(tar.subarray(-1024).every((b) => b === 0)).toBe(true);
  });

  it.each([
    ['a nested path over 100 bytes', `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(60)}.txt`],
    ['a 200-character name with no slash', 'a'.repeat(200)],
    ['a non-ASCII name of 240 bytes', '\u00fc'.repeat(120)],
  ])('keeps %s intact', async (_what, path) => {
    const entries = await readTar(await buildPayload(input({ files: [{ path, data: Buffer.from('deep') }] })));
    expect(entries.at(-1)?.header.name).toBe(path);
    expect(entries.at(-1)?.data.toString()).toBe('deep');
  });
});
