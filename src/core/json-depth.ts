// How deep a JSON value sent by a caller may nest, for every way in: the HTTP API's bodies and the
// agent tools' arguments (MCP, LangChain, callTool) count the same levels.

/**
 * How deep a request body (or a tool's arguments) may nest. JSON.parse copes with any depth, but
 * validating, serialising and the sandbox's own JSON reader recurse: a body of a few kilobytes
 * nested 5,000 deep overflowed the stack (a 500). Nothing a caller sends needs more than a few
 * levels; 64 leaves room.
 */
export const MAX_JSON_DEPTH = 64;

/** Whether a parsed JSON value nests deeper than `max` (arrays and objects), without recursing. */
export function nestsDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop() as [unknown, number];
    if (v === null || typeof v !== 'object') continue;
    if (depth >= max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
  return false;
}
