// Runs once around the whole suite. After every test file has finished, no container labelled
// pybox.execution that this run created may exist: the service must never leak one. Containers
// that were there before the run (another run on the same engine) are not this run's to judge.
import Docker from 'dockerode';

async function leftovers(): Promise<Map<string, string>> {
  const docker = new Docker();
  try {
    const list = await docker.listContainers({ all: true, filters: { label: ['pybox.execution'] } });
    return new Map(list.map((c) => [c.Id, `${c.Id.slice(0, 12)} ${c.State} ${c.Labels['pybox.instance'] ?? ''} ${c.Labels['pybox.execution'] ?? ''}`]));
  } catch {
    return new Map(); // no engine: the integration tests will have failed on their own
  }
}

let before = new Set<string>();

export async function setup(): Promise<void> {
  before = new Set((await leftovers()).keys());
}

export async function teardown(): Promise<void> {
  const created = async () => [...(await leftovers()).entries()].filter(([id]) => !before.has(id)).map(([, d]) => d);
  // Removal after a result is returned happens in the background; give it a moment to finish.
  for (let i = 0; i < 50; i++) {
    if ((await created()).length === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  const left = await created();
  throw new Error(`the test run left ${left.length} container(s) labelled pybox.execution:\n${left.join('\n')}`);
}
