// Removes containers a previous pybox process left behind (a crash, a kill -9, a power cut). Every
// sandbox carries the pybox.execution label and its deployment's pybox.instance label, so they are
// found by label, never by name, and another deployment on the same engine is left alone.
import type { Logger } from '../core/ports.ts';
import type { ContainerEngine } from './docker-engine.ts';

export async function reapLeftovers(engine: ContainerEngine, instance: string, logger: Logger): Promise<number> {
  const ids = await engine.listLabelled(instance);
  const results = await Promise.allSettled(ids.map((id) => engine.removeById(id)));
  const failed = results.filter((r) => r.status === 'rejected').length;
  if (ids.length > 0) logger.info('removed sandboxes left by an earlier process', { removed: ids.length - failed, failed });
  return ids.length - failed;
}
