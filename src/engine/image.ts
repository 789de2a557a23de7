// The sandbox image's tag carries a hash of images/, so a change to the runner or the Dockerfiles
// makes setup build a new image and the service use it, with no version to bump by hand.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';

export const IMAGE_REPOSITORY = 'pybox-python';
export const BASE_REPOSITORY = 'pybox-base';

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) out.push(...filesUnder(full));
    else out.push(full);
  }
  return out;
}

/** First 12 hex digits of a sha256 over every file's relative path and content. */
export function treeHash(dir: string): string {
  const h = createHash('sha256');
  for (const file of filesUnder(dir)) {
    h.update(relative(dir, file).split(sep).join('/'));
    h.update('\0');
    h.update(readFileSync(file));
    h.update('\0');
  }
  return h.digest('hex').slice(0, 12);
}

export interface ImageTags {
  /** The image executions run in. */
  sandbox: string;
  /** The Python base it is built on (official slim image or the offline Debian build). */
  base: string;
}

export function imageTags(imagesDir: string): ImageTags {
  return {
    sandbox: `${IMAGE_REPOSITORY}:${treeHash(imagesDir)}`,
    base: `${BASE_REPOSITORY}:${treeHash(join(imagesDir, 'base'))}`,
  };
}
