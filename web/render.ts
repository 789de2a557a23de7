// The output panel: streamed chunks, then the result (status, figures, values, files, feedback).
// Everything shown comes from inside a sandbox and is treated as hostile: text goes in as text
// (never as markup), images only as base64 PNG data, and HTML values only into a sandboxed frame
// that may run nothing and reaches nothing.
import type { ExecutionResult, ResultOutput } from '../src/core/schemas.ts';
import type { OutputStream } from './api.ts';

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const STATUS_TEXT: Record<string, string> = {
  completed: 'Completed',
  error: 'Error',
  timeout: 'Timed out',
  oom: 'Out of memory',
  output_limit: 'Output limit reached',
  validation_failed: 'Refused before running',
  cancelled: 'Cancelled',
  internal_error: 'Internal error',
};

export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return '';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

export function statusText(result: Pick<ExecutionResult, 'status' | 'durationMs' | 'exitCode' | 'signal' | 'runtime'>): string {
  const parts = [STATUS_TEXT[result.status] ?? result.status, formatMs(result.durationMs)];
  if (result.exitCode !== null && result.exitCode !== undefined) parts.push(`exit ${result.exitCode}`);
  if (result.signal) parts.push(result.signal);
  if (result.runtime) parts.push(result.runtime);
  return parts.filter(Boolean).join(' · ');
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: { className?: string; text?: string } = {}): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined) node.textContent = props.text;
  return node;
}

export interface OutputPanel {
  clear(): void;
  append(stream: OutputStream, text: string): void;
  /** Whether any chunk was streamed since the last clear. */
  readonly streamed: boolean;
  showResult(result: ExecutionResult): void;
}

export function outputPanel(parts: {
  output: HTMLElement;
  results: HTMLElement;
  downloads: HTMLElement;
  downloadList: HTMLElement;
  feedbackBox: HTMLDetailsElement;
  feedback: HTMLElement;
}): OutputPanel {
  let streamed = false;
  let urls: string[] = [];

  const append = (stream: OutputStream, text: string) => {
    if (!text) return;
    // Consecutive chunks of one stream share a span, so long outputs stay a few nodes.
    const last = parts.output.lastElementChild;
    if (last instanceof HTMLSpanElement && last.dataset.stream === stream) last.append(text);
    else {
      const span = el('span', { className: `out-${stream}`, text });
      span.dataset.stream = stream;
      parts.output.append(span);
    }
  };

  const note = (text: string) => parts.output.append(el('span', { className: 'out-note', text: `\n[${text}]\n` }));

  function figure(output: ResultOutput, n: number): HTMLElement {
    const fig = el('figure', { className: 'figure' });
    if (output.data.length > 0 && BASE64.test(output.data)) {
      const img = el('img');
      img.src = `data:image/png;base64,${output.data}`;
      img.alt = `Figure ${n}`;
      fig.append(img, el('figcaption', { text: `Figure ${n}` }));
    } else {
      fig.append(el('figcaption', { text: `Figure ${n}: not a valid image` }));
    }
    return fig;
  }

  function value(outputs: ResultOutput[]): HTMLElement {
    const box = el('div', { className: 'value' });
    box.append(el('h3', { text: 'Value of the last expression' }));
    const html = outputs.find((o) => o.type === 'text/html');
    if (html) {
      const frame = el('iframe');
      // No scripts, no forms, an opaque origin: the page's CSP is inherited, so nothing loads either.
      frame.setAttribute('sandbox', '');
      frame.title = 'Value shown as HTML';
      frame.srcdoc = html.data;
      box.append(frame);
      return box;
    }
    const text = outputs.find((o) => o.type === 'text/markdown') ?? outputs.find((o) => o.type === 'text/plain');
    if (text) box.append(el('pre', { className: 'value-text', text: text.data }));
    return box;
  }

  function download(file: { path: string; size: number; contentBase64: string }): HTMLElement {
    const li = el('li');
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = Uint8Array.from(atob(file.contentBase64), (ch) => ch.charCodeAt(0));
    } catch {
      li.textContent = `${file.path}: not valid base64`;
      return li;
    }
    const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
    urls.push(url);
    const a = el('a', { text: file.path });
    a.href = url;
    a.download = file.path.split('/').at(-1) ?? 'file';
    li.append(a, ` (${bytes.length} bytes)`);
    return li;
  }

  return {
    get streamed() {
      return streamed;
    },
    clear() {
      streamed = false;
      parts.output.replaceChildren();
      parts.results.replaceChildren();
      parts.downloadList.replaceChildren();
      parts.downloads.hidden = true;
      parts.feedbackBox.hidden = true;
      parts.feedback.textContent = '';
      for (const url of urls) URL.revokeObjectURL(url);
      urls = [];
    },
    append(stream, text) {
      streamed = true;
      append(stream, text);
    },
    showResult(result) {
      // Without a stream (or one that carried nothing) the result's own copies are shown; after a
      // stream its chunks stay, in the order they were written.
      if (!streamed) {
        append('stdout', result.stdout ?? '');
        append('stderr', result.stderr ?? '');
      }
      if (result.truncated?.stdout) note('stdout was cut at the output limit');
      if (result.truncated?.stderr) note('stderr was cut at the output limit');
      if (parts.output.childElementCount === 0) parts.output.append(el('span', { className: 'out-note', text: '(no output)' }));

      const outputs = Array.isArray(result.outputs) ? result.outputs : [];
      let n = 0;
      for (const o of outputs) if (o.kind === 'figure' && o.type === 'image/png') parts.results.append(figure(o, ++n));
      const values = outputs.filter((o) => o.kind === 'result');
      if (values.length > 0) parts.results.append(value(values));
      if (result.outputsDropped) parts.results.append(el('p', { className: 'note', text: `${result.outputsDropped} more output(s) were over the limits and not returned.` }));

      const files = Array.isArray(result.files) ? result.files : [];
      for (const f of files) parts.downloadList.append(download(f));
      if (result.filesDropped) parts.downloadList.append(el('li', { className: 'note', text: `${result.filesDropped} file(s) not returned (links, odd names, or over the limits)` }));
      parts.downloads.hidden = parts.downloadList.childElementCount === 0;

      if (result.feedback) {
        parts.feedback.textContent = result.feedback;
        parts.feedbackBox.hidden = false;
      }
    },
  };
}
