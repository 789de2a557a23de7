// Builds the sandbox image when the engine has none for the current content of images/.
// The base prefers the official python slim image when a registry answers; otherwise it is built
// offline from the host's own Debian package sources (images/base/build-offline.sh).
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { join } from 'node:path';
import { imageTags } from '../src/engine/image.ts';

const root = join(import.meta.dirname, '..');
const images = join(root, 'images');
const tags = imageTags(images);
const log = (msg: string) => process.stderr.write(`pybox setup: ${msg}\n`);

function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): boolean {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], ...opts });
  return r.status === 0;
}
const imageExists = (tag: string) => run('docker', ['image', 'inspect', tag], { stdio: 'ignore' });

function buildBase(): void {
  log(`building the Python base image ${tags.base}`);
  // A registry that answers gives the official image; with none, the pull fails within seconds.
  if (run('timeout', ['60', 'docker', 'pull', '-q', 'python:3.12-slim'], { stdio: 'ignore' })) {
    if (run('docker', ['build', '-q', '-t', tags.base, '-f', join(images, 'base', 'official.Dockerfile'), join(images, 'base')])) return;
    log('the official base did not build; falling back to the offline Debian base');
  } else {
    log('no container registry answers: building the base offline from the host\'s Debian package sources');
  }
  if (!run('bash', [join(images, 'base', 'build-offline.sh'), tags.base])) {
    throw new Error('the offline base image could not be built (see the messages above)');
  }
}

if (imageExists(tags.sandbox)) {
  log(`sandbox image ${tags.sandbox} is present`);
} else {
  if (!imageExists(tags.base)) buildBase();
  log(`building the sandbox image ${tags.sandbox}`);
  // No network: nothing in it downloads, and its build then works on an engine without a bridge too.
  const ok = run('docker', ['build', '-q', '--network', 'none', '--build-arg', `BASE=${tags.base}`, '--label', `pybox.base=${tags.base}`, '-t', tags.sandbox, join(images, 'python')], {
    env: { ...process.env, DOCKER_BUILDKIT: '0' },
  });
  if (!ok) throw new Error(`docker build of ${tags.sandbox} failed (see the messages above)`);
  log(`sandbox image ${tags.sandbox} is ready`);
}
