// The playground page: an editor, a Run button, the output as it streams, sessions and history.
// Loaded as a module from a file (the page's CSP allows no inline script).
import { MIN_MEMORY_MB, MIN_TIMEOUT_MS } from '../src/core/limits.ts';
import type { ExecutionResult, InputFile, RuntimeInfo, SessionInfo } from '../src/core/schemas.ts';
import { Api, ApiError } from './api.ts';
import { createEditor } from './editor.ts';
import { formatMs, outputPanel, statusText } from './render.ts';
import { codeOf, forgetKey, readKey, rememberCode, saveKey, readDraft, saveDraft } from './storage.ts';

const EXAMPLE = `# Runs in a fresh, network-less sandbox. Ctrl+Enter (⌘+Enter) runs it.
import sys

name = sys.stdin.readline().strip() or "world"
print(f"hello, {name}")
for i in range(3):
    print(i, i * i)
`;

function byId<T extends HTMLElement>(id: string, type: new () => T): T {
  const node = document.getElementById(id);
  if (!(node instanceof type)) throw new Error(`the page has no #${id}`);
  return node;
}

const ui = {
  key: byId('api-key', HTMLInputElement),
  keyForm: byId('key-form', HTMLFormElement),
  banner: byId('banner', HTMLParagraphElement),
  modeRun: byId('mode-run', HTMLInputElement),
  modeSession: byId('mode-session', HTMLInputElement),
  run: byId('run', HTMLButtonElement),
  stop: byId('stop', HTMLButtonElement),
  restart: byId('restart', HTMLButtonElement),
  sessionInfo: byId('session-info', HTMLParagraphElement),
  editor: byId('editor', HTMLDivElement),
  stdin: byId('stdin', HTMLTextAreaElement),
  files: byId('files', HTMLInputElement),
  fileList: byId('file-list', HTMLUListElement),
  timeout: byId('timeout', HTMLInputElement),
  timeoutRange: byId('timeout-range', HTMLSpanElement),
  memory: byId('memory', HTMLInputElement),
  memoryRange: byId('memory-range', HTMLSpanElement),
  status: byId('status', HTMLParagraphElement),
  historyList: byId('history-list', HTMLOListElement),
  historyMore: byId('history-more', HTMLButtonElement),
  historyRefresh: byId('history-refresh', HTMLButtonElement),
};

const panel = outputPanel({
  output: byId('output', HTMLPreElement),
  results: byId('results', HTMLDivElement),
  downloads: byId('downloads', HTMLDivElement),
  downloadList: byId('download-list', HTMLUListElement),
  feedbackBox: byId('feedback-box', HTMLDetailsElement),
  feedback: byId('feedback', HTMLPreElement),
});

const api = new Api({ base: new URL('.', location.href), key: () => readKey() });

let running: AbortController | null = null;
let session: SessionInfo | null = null;
let historyCursor: string | null = null;

const editor = createEditor(ui.editor, { initial: readDraft() ?? EXAMPLE, onRun: () => void run(), label: 'Python code' });
editor.view.dom.addEventListener('input', () => saveDraft(editor.code()));
editor.view.dom.addEventListener('keyup', () => saveDraft(editor.code()));

function setStatus(text: string, tone: 'idle' | 'busy' | 'ok' | 'bad' = 'idle'): void {
  ui.status.textContent = text;
  ui.status.dataset.tone = tone;
}

function showBanner(text: string | null, tone: 'error' | 'info' = 'error'): void {
  ui.banner.hidden = text === null;
  ui.banner.textContent = text ?? '';
  ui.banner.dataset.tone = tone;
}

/** What a refusal means to the person at the page. */
function explain(e: unknown): string {
  if (e instanceof DOMException && e.name === 'AbortError') return 'Stopped.';
  if (e instanceof ApiError) {
    if (e.code === 'unauthorized') return readKey() ? 'The API key was not accepted. Check it in the API key field.' : 'This server needs an API key: enter it in the API key field.';
    return `${e.message} (${e.code})`;
  }
  if (e instanceof TypeError) return `The server could not be reached: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

function failed(e: unknown): void {
  const text = explain(e);
  setStatus(text, 'bad');
  if (e instanceof ApiError && e.code === 'unauthorized') {
    showBanner(text);
    ui.key.focus();
  }
}

// ---- limits --------------------------------------------------------------------------------------

function applyLimits(info: RuntimeInfo): void {
  const { defaults, max } = info.limits;
  const maxS = Math.max(1, Math.floor(max.timeoutMs / 1000));
  const minS = Math.ceil(MIN_TIMEOUT_MS / 1000);
  ui.timeout.min = String(minS);
  ui.timeout.max = String(maxS);
  ui.timeout.value ||= String(Math.min(maxS, Math.max(minS, Math.round(defaults.timeoutMs / 1000))));
  ui.timeoutRange.textContent = `${minS}–${maxS}`;
  ui.memory.min = String(MIN_MEMORY_MB);
  ui.memory.max = String(max.memoryMb);
  ui.memory.value ||= String(defaults.memoryMb);
  ui.memoryRange.textContent = `${MIN_MEMORY_MB}–${max.memoryMb}`;
  document.body.dataset.limits = 'loaded';
}

async function loadLimits(): Promise<void> {
  try {
    applyLimits(await api.runtimes());
    showBanner(null);
  } catch (e) {
    if (e instanceof ApiError && e.code === 'unauthorized') {
      showBanner(readKey() ? 'The API key was not accepted.' : 'This server needs an API key: enter it above. It is kept in this tab only and sent as a header.', 'info');
    } else showBanner(`The server's limits could not be read: ${explain(e)}`);
  }
}

/** The limits asked for, or a message saying which is out of range. */
function limits(): { timeoutMs?: number; memoryMb?: number } | string {
  const out: { timeoutMs?: number; memoryMb?: number } = {};
  for (const [input, name, scale, key] of [
    [ui.timeout, 'time limit', 1000, 'timeoutMs'],
    [ui.memory, 'memory', 1, 'memoryMb'],
  ] as const) {
    if (input.value === '') continue;
    const n = Number(input.value);
    if (!Number.isInteger(n) || !input.checkValidity()) return `The ${name} must be a whole number from ${input.min} to ${input.max}.`;
    out[key] = n * scale;
  }
  return out;
}

// ---- input files ---------------------------------------------------------------------------------

function base64Of(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function inputFiles(): Promise<InputFile[]> {
  const files = [...(ui.files.files ?? [])];
  return Promise.all(files.map(async (f) => ({ path: f.name, content: base64Of(new Uint8Array(await f.arrayBuffer())), encoding: 'base64' as const })));
}

ui.files.addEventListener('change', () => {
  ui.fileList.replaceChildren(
    ...[...(ui.files.files ?? [])].map((f) => {
      const li = document.createElement('li');
      li.textContent = `${f.name} (${f.size} bytes)`;
      return li;
    }),
  );
});

// ---- sessions ------------------------------------------------------------------------------------

const sessionMode = () => ui.modeSession.checked;

function showSession(text: string | null): void {
  ui.sessionInfo.hidden = text === null;
  ui.sessionInfo.textContent = text ?? '';
  ui.restart.hidden = !sessionMode();
  ui.restart.disabled = session === null || running !== null;
}

async function endSession(reason: string): Promise<void> {
  const ending = session;
  session = null;
  if (ending) {
    try {
      await api.closeSession(ending.id);
    } catch (e) {
      setStatus(`The session could not be ended: ${explain(e)}`, 'bad');
    }
  }
  showSession(sessionMode() ? reason : null);
}

for (const radio of [ui.modeRun, ui.modeSession]) {
  radio.addEventListener('change', () => {
    if (sessionMode()) showSession('Session mode: variables, imports and files persist between runs. The first run starts the session.');
    else void endSession('');
  });
}

ui.restart.addEventListener('click', () => void endSession('Restarted: the next run starts a fresh interpreter.'));

// A session left open would hold a sandbox until its idle timeout; keepalive lets the DELETE outlive the page.
addEventListener('pagehide', () => {
  if (session) void api.closeSession(session.id, { keepalive: true }).catch(() => undefined);
});

// ---- running -------------------------------------------------------------------------------------

function setRunning(controller: AbortController | null): void {
  running = controller;
  ui.run.disabled = controller !== null;
  ui.stop.hidden = controller === null;
  ui.restart.disabled = session === null || controller !== null;
  document.body.dataset.running = String(controller !== null);
}

async function run(): Promise<void> {
  if (running) return;
  const code = editor.code();
  if (code.trim() === '') {
    setStatus('There is no code to run.', 'bad');
    return;
  }
  const asked = limits();
  if (typeof asked === 'string') {
    setStatus(asked, 'bad');
    return;
  }
  const controller = new AbortController();
  setRunning(controller);
  panel.clear();
  editor.markError(null);
  showBanner(null);
  const started = performance.now();
  setStatus('Running…', 'busy');
  const handlers = { onOutput: panel.append };
  try {
    const files = await inputFiles();
    const stdin = ui.stdin.value;
    const common = { code, ...(stdin ? { stdin } : {}), ...(files.length ? { files } : {}) };
    let result: ExecutionResult;
    if (sessionMode()) {
      if (!session) {
        setStatus('Starting a session…', 'busy');
        session = await api.openSession(asked);
        showSession(`Session ${session.id.slice(0, 8)} started; it ends after ${formatMs(session.idleTimeoutMs)} idle.`);
        setStatus('Running…', 'busy');
      }
      const current = session;
      try {
        result = await api.callSession(current.id, { ...common, ...(asked.timeoutMs ? { timeoutMs: asked.timeoutMs } : {}) }, handlers, controller.signal);
      } catch (e) {
        if (e instanceof ApiError && (e.code === 'session_ended' || e.code === 'not_found')) {
          session = null;
          showSession('The session has ended; the next run starts a new one.');
        }
        throw e;
      }
      const info = result.session;
      if (info?.ended) {
        session = null;
        showSession(`The session ended during call ${info.call}; the next run starts a new one.`);
      } else if (info) {
        showSession(`Session ${info.sessionId.slice(0, 8)} · call ${info.call}${info.stateLost ? ' · the interpreter was restarted: earlier variables are gone' : ''}`);
      }
    } else {
      result = await api.run({ ...common, ...asked }, handlers, controller.signal);
    }
    rememberCode(result.id, code);
    show(result);
    void refreshHistory();
  } catch (e) {
    failed(e);
    if (!(e instanceof ApiError)) setStatus(`${explain(e)} (after ${formatMs(performance.now() - started)})`, 'bad');
  } finally {
    setRunning(null);
  }
}

function show(result: ExecutionResult): void {
  panel.showResult(result);
  setStatus(statusText(result), result.success ? 'ok' : 'bad');
  const error = result.error;
  if (error && typeof error.line === 'number' && error.line > 0) {
    editor.markError({ line: error.line, column: error.column ?? null, message: `${error.type}: ${error.message}` });
  }
}

ui.run.addEventListener('click', () => void run());
ui.stop.addEventListener('click', () => running?.abort());
// Ctrl/Cmd+Enter anywhere on the page (the editor handles its own and marks the event handled).
document.addEventListener('keydown', (e) => {
  if (e.defaultPrevented || e.key !== 'Enter' || !(e.ctrlKey || e.metaKey)) return;
  e.preventDefault();
  void run();
});

// ---- history -------------------------------------------------------------------------------------

function historyItem(result: ExecutionResult): HTMLLIElement {
  const li = document.createElement('li');
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'history-item';
  button.dataset.id = result.id;
  const code = codeOf(result.id);
  const title = code?.split('\n').find((l) => l.trim() !== '' && !l.trimStart().startsWith('#'))?.trim() ?? `execution ${result.id.slice(0, 8)}`;
  const badge = document.createElement('span');
  badge.className = `badge ${result.success ? 'ok' : 'bad'}`;
  badge.textContent = result.status;
  const name = document.createElement('span');
  name.className = 'title';
  name.textContent = title.length > 60 ? `${title.slice(0, 60)}…` : title;
  const when = document.createElement('span');
  when.className = 'when';
  const date = new Date(result.createdAt);
  when.textContent = `${Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString()} · ${formatMs(result.durationMs)}${result.session ? ' · session' : ''}`;
  button.append(badge, name, when);
  button.setAttribute('aria-label', `Open ${title} (${result.status})`);
  button.addEventListener('click', () => void openExecution(result.id));
  li.append(button);
  return li;
}

async function refreshHistory(more = false): Promise<void> {
  try {
    const page = await api.history(more ? (historyCursor ?? undefined) : undefined);
    const items = page.items.map(historyItem);
    if (more) ui.historyList.append(...items);
    else ui.historyList.replaceChildren(...items);
    historyCursor = page.nextCursor;
    ui.historyMore.hidden = page.nextCursor === null;
    if (!more && items.length === 0) {
      const li = document.createElement('li');
      li.className = 'note';
      li.textContent = 'No runs yet.';
      ui.historyList.append(li);
    }
  } catch (e) {
    if (!(e instanceof ApiError && e.code === 'unauthorized')) setStatus(`History could not be read: ${explain(e)}`, 'bad');
  }
}

async function openExecution(id: string): Promise<void> {
  if (running) return;
  try {
    const result = await api.execution(id);
    // The server keeps the code with the result; this browser's own copy is kept too (older servers).
    const code = result.code ?? codeOf(id);
    if (code !== null) {
      editor.setCode(code);
      saveDraft(code);
      showBanner(null);
    } else {
      editor.markError(null);
      showBanner('This server did not keep the code of this run: its result is shown, the editor is unchanged.', 'info');
    }
    panel.clear();
    show(result);
    editor.view.focus();
  } catch (e) {
    failed(e);
  }
}

ui.historyRefresh.addEventListener('click', () => void refreshHistory());
ui.historyMore.addEventListener('click', () => void refreshHistory(true));

// ---- the API key ---------------------------------------------------------------------------------

ui.key.value = readKey() ?? '';
const keyChanged = () => {
  const value = ui.key.value.trim();
  if (value) saveKey(value);
  else forgetKey();
  void loadLimits();
  void refreshHistory();
};
ui.key.addEventListener('change', keyChanged);
ui.keyForm.addEventListener('submit', (e) => {
  e.preventDefault();
  keyChanged();
});

// A reloaded page may get its mode back from the browser's form restoration.
if (sessionMode()) showSession('Session mode: variables, imports and files persist between runs. The first run starts the session.');
setStatus('Ready.');
document.body.dataset.ready = 'true';
void loadLimits();
void refreshHistory();
