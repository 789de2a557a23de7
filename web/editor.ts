// The code editor: CodeMirror 6 with Python, line numbers and the usual editing keys, and a mark on
// the line an error points at (a line decoration the page can find, plus a diagnostic with the message).
import { basicSetup } from 'codemirror';
import { python } from '@codemirror/lang-python';
import { indentWithTab } from '@codemirror/commands';
import { setDiagnostics } from '@codemirror/lint';
import { EditorState, Prec, StateEffect, StateField } from '@codemirror/state';
import { Decoration, EditorView, keymap, type DecorationSet } from '@codemirror/view';

const markLine = StateEffect.define<number | null>();
const errorLineClass = Decoration.line({ class: 'cm-pybox-error-line', attributes: { 'data-error-line': 'true' } });

// The mark follows its line through edits, and goes when the line is deleted or the next run starts.
const errorLine = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update(marks, tr) {
    let next = marks.map(tr.changes);
    for (const e of tr.effects) {
      if (!e.is(markLine)) continue;
      next = e.value === null ? Decoration.none : Decoration.set([errorLineClass.range(tr.state.doc.line(e.value).from)]);
    }
    return next;
  },
  provide: (f) => EditorView.decorations.from(f),
});

export interface CodeEditor {
  readonly view: EditorView;
  code(): string;
  setCode(code: string): void;
  /** Marks line `line` (1-based; out of range: the last) with `message`, or clears the mark (null). */
  markError(error: { line: number; column?: number | null; message: string } | null): void;
}

/** The nonce the server wrote into this answer's page; CodeMirror's style elements need it under the page's CSP. */
function styleNonce(): string | null {
  const meta = document.querySelector('meta[name="pybox-style-nonce"]');
  const value = meta?.getAttribute('content') ?? '';
  return /^[A-Za-z0-9+/=]{16,}$/.test(value) ? value : null;
}

export function createEditor(parent: HTMLElement, opts: { initial: string; onRun: () => void; label: string }): CodeEditor {
  const nonce = styleNonce();
  const run = () => {
    opts.onRun();
    return true;
  };
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: opts.initial,
      extensions: [
        basicSetup,
        python(),
        // Tab indents (Python needs it); Escape then Tab leaves the editor, as CodeMirror documents.
        keymap.of([indentWithTab]),
        Prec.highest(keymap.of([{ key: 'Mod-Enter', run }])),
        errorLine,
        EditorView.contentAttributes.of({ 'aria-label': opts.label }),
        ...(nonce ? [EditorView.cspNonce.of(nonce)] : []),
      ],
    }),
  });
  return {
    view,
    code: () => view.state.doc.toString(),
    setCode(code) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: code }, effects: markLine.of(null) });
      view.dispatch(setDiagnostics(view.state, []));
    },
    markError(error) {
      if (!error) {
        view.dispatch({ effects: markLine.of(null) });
        view.dispatch(setDiagnostics(view.state, []));
        return;
      }
      const doc = view.state.doc;
      const n = Math.min(Math.max(1, error.line), doc.lines);
      const line = doc.line(n);
      const from = error.column ? Math.min(line.from + error.column - 1, line.to) : line.from;
      view.dispatch({ effects: [markLine.of(n), EditorView.scrollIntoView(line.from, { y: 'center' })] });
      view.dispatch(setDiagnostics(view.state, [{ from, to: Math.max(from, line.to), severity: 'error', message: error.message }]));
    },
  };
}
