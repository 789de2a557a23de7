// The agent session tests of sessions.test.ts against a real node under runc (composePybox and the
// engine's session sandboxes): the scripted LangChain.js agent keeps a real interpreter's state
// across its calls, and MCP's session tools drive a real session. Everything is checked through
// the HTTP API. (sessions.test.ts alone runs them on fakes, where it can also look behind the API.)
process.env.PYBOX_TEST_SESSIONS ??= 'runc';
await import('./sessions.test.ts');
