import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BASE_REPOSITORY, IMAGE_REPOSITORY, imageTags, treeHash } from '../../src/engine/image.ts';

let root = '';

function write(rel: string, content: string | Buffer, dir = root): void {
  const full = join(dir, rel);
  mkdirSync(dirname(full), { recursive: true });
  writeFileSync(full, content);
}

function fixture(dir = root): void {
  write('python/Dockerfile', 'FROM pybox-base\nCOPY runner.py /opt/pybox/\n', dir);
  write('python/runner.py', 'print("runner")\n', dir);
  write('base/official.Dockerfile', 'FROM python:3.12-slim\n', dir);
  write('base/build-offline.sh', '#!/bin/sh\n', dir);
}

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'pybox-image-test-'));
  fixture();
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('treeHash', () => {
  it('is 12 lowercase hex digits', () => {
    expect(treeHash(root)).toMatch(/^[0-9a-f]{12}$/);
  });

  it('is stable across calls and across identical trees', () => {
    const first = treeHash(root);
    expect(treeHash(root)).toBe(first);
    const other = mkdtempSync(join(tmpdir(), 'pybox-image-test-'));
    try {
      fixture(other);
      expect(treeHash(other)).toBe(first);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('changes when a file\'s content changes, even by one byte', () => {
    const before = treeHash(root);
    write('python/runner.py', 'print("runner!")\n');
    expect(treeHash(root)).not.toBe(before);
  });

  it('changes when a file is renamed with the same content', () => {
    const before = treeHash(root);
    renameSync(join(root, 'python/runner.py'), join(root, 'python/runner2.py'));
    expect(treeHash(root)).not.toBe(before);
  });

  it('changes when a file moves to another directory', () => {
    const before = treeHash(root);
    renameSync(join(root, 'base/build-offline.sh'), join(root, 'python/build-offline.sh'));
    expect(treeHash(root)).not.toBe(before);
  });

  it('changes when a file is added, even an empty one', () => {
    const before = treeHash(root);
    write('python/extra', '');
    expect(treeHash(root)).not.toBe(before);
  });

  it('tells apart moving bytes from one file\'s end to the next one\'s name', () => {
    rmSync(root, { recursive: true, force: true });
    mkdirSync(root);
    write('a', 'xy');
    write('b', 'z');
    const one = treeHash(root);
    write('a', 'x');
    write('b', 'yz');
    expect(treeHash(root)).not.toBe(one);
  });
  it('tells apart a name that ends where the content begins (ab="c" vs a="bc")', () => {
    rmSync(root, { recursive: true, force: true });
    mkdirSync(root);
    write('ab', 'c');
    const one = treeHash(root);
    rmSync(join(root, 'ab'));
    write('a', 'bc');
    expect(treeHash(root)).not.toBe(one);
  });
});

describe('imageTags', () => {
  it('tags the sandbox with the hash of the whole tree and the base with the hash of base/', () => {
    expect(imageTags(root)).toEqual({
      sandbox: `${IMAGE_REPOSITORY}:${treeHash(root)}`,
      base: `${BASE_REPOSITORY}:${treeHash(join(root, 'base'))}`,
    });
    expect(IMAGE_REPOSITORY).toBe('pybox-python');
    expect(BASE_REPOSITORY).toBe('pybox-base');
  });

  it('a change outside base/ changes the sandbox tag but not the base tag', () => {
    const before = imageTags(root);
    write('python/runner.py', 'changed\n');
    const after = imageTags(root);
    expect(after.sandbox).not.toBe(before.sandbox);
    expect(after.base).toBe(before.base);
  });

  it('a change inside base/ changes both tags', () => {
    const before = imageTags(root);
    write('base/official.Dockerfile', 'FROM python:3.13-slim\n');
    const after = imageTags(root);
    expect(after.sandbox).not.toBe(before.sandbox);
    expect(after.base).not.toBe(before.base);
  });
});
