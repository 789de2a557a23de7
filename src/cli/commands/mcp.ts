// `pybox mcp`: pybox's tools for an MCP host, over stdio. It talks to a running pybox through the
// typed client (PYBOX_URL, PYBOX_API_KEY) and offers the tools that server lists at /v1/tools.
import type { Command } from 'commander';
import { clientFromEnv } from '../../client/client.ts';
import { DEFAULT_TOOLS, selectTools, TOOL_NAMES, type ToolName, type ToolSelection } from '../../adapters/tools.ts';
import type { CliContext } from '../context.ts';

function parseToolNames(list: string): ToolSelection {
  const selection: ToolSelection = {};
  for (const raw of list.split(',').map((s) => s.trim()).filter(Boolean)) {
    if (!(TOOL_NAMES as readonly string[]).includes(raw)) throw new Error(`unknown tool ${raw} (known: ${TOOL_NAMES.join(', ')})`);
    selection[raw as ToolName] = true;
  }
  return selection;
}

export function registerMcp(program: Command, ctx: CliContext): void {
  program
    .command('mcp')
    .description('serve pybox tools to an MCP host over stdio (the server at PYBOX_URL, key PYBOX_API_KEY)')
    .option('--tools <names>', `comma-separated tools to offer (${TOOL_NAMES.join(', ')}); default: those the server enables`)
    .action(async (opts: { tools?: string }) => {
      const client = clientFromEnv(ctx.env);
      let selection: ToolSelection;
      if (opts.tools !== undefined) {
        selection = parseToolNames(opts.tools);
      } else {
        try {
          const listed = await client.tools();
          selection = Object.fromEntries(listed.anthropic.map((t) => [t.name, true]));
        } catch (e) {
          // The host may start us before the server: offer the defaults, and calls will say if it is away.
          ctx.err(`pybox mcp: could not ask ${client.baseUrl} which tools it enables (${e instanceof Error ? e.message : String(e)}); offering the defaults`);
          selection = DEFAULT_TOOLS;
        }
      }
      // stdout is the protocol's: diagnostics go to stderr only.
      const { serveMcpStdio } = await import('../../adapters/mcp.ts');
      await serveMcpStdio({ backend: client, tools: selectTools(selection) });
    });
}
