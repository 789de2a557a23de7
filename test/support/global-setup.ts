// Runs once around the whole suite. After every test file has finished, no container labelled
// pybox.execution may exist: the service must never leak one.
import Docker from 'dockerode';

async function leftovers(): Promise<string[]> {
  const docker = new Docker();
  try {
    const list = await docker.listContainers({ all: true, filters: { label: ['pybox.execution'] } });
    return list.map((c) => `${c.Id.slice(0, 12)} ${c.State} ${c.Labels['pybox.execution'] ?? ''}`);
  } catch {
    return []; // no engine: the integration tests will have failed on their own
  }
}

export async function setup(): Promise<void> {
  const before = await leftovers();
  if (before.length > 0) {
    throw new Error(`containers labelled pybox.execution exist before the tests start:\n${before.join('\n')}`);
  }
}

export async function teardown(): Promise<void> {
  // Removal after a result is returned happens in the background; give it a moment to finish.
  for (let i = 0; i < 50; i++) {
    if ((await leftovers()).length === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  const left = await leftovers();
  throw new Error(`the test run left ${left.length} container(s) labelled pybox.execution:\n${left.join('\n')}`);
}
