// What the page keeps in the browser. The API key lives in sessionStorage (this tab only, gone when
// it closes) and is only ever sent as a header. The code of runs made here is kept in localStorage
// too (a server of an older version keeps results without their code); a bounded number, newest kept.
const KEY = 'pybox.apiKey';
const DRAFT = 'pybox.draft';
const CODES = 'pybox.codes';
const MAX_CODES = 100;
const MAX_CODE_CHARS = 200_000;

function safely<T>(f: () => T, fallback: T): T {
  try {
    return f();
  } catch {
    // Storage refused (private mode, quota): the page works without it.
    return fallback;
  }
}

export const readKey = (): string | null => safely(() => sessionStorage.getItem(KEY), null);
export const saveKey = (key: string): void => safely(() => sessionStorage.setItem(KEY, key), undefined);
export const forgetKey = (): void => safely(() => sessionStorage.removeItem(KEY), undefined);

export const readDraft = (): string | null => safely(() => localStorage.getItem(DRAFT), null);
export const saveDraft = (code: string): void => safely(() => localStorage.setItem(DRAFT, code.slice(0, MAX_CODE_CHARS)), undefined);

type Codes = Array<[string, string]>;

function codes(): Codes {
  return safely<Codes>(() => {
    const parsed: unknown = JSON.parse(localStorage.getItem(CODES) ?? '[]');
    if (!Array.isArray(parsed)) return [];
    return parsed.flatMap((e: unknown): Codes => (Array.isArray(e) && typeof e[0] === 'string' && typeof e[1] === 'string' ? [[e[0], e[1]]] : []));
  }, []);
}

export function rememberCode(id: string, code: string): void {
  if (code.length > MAX_CODE_CHARS) return;
  const next: Codes = [[id, code] as [string, string], ...codes().filter(([i]) => i !== id)].slice(0, MAX_CODES);
  safely(() => localStorage.setItem(CODES, JSON.stringify(next)), undefined);
}

export const codeOf = (id: string): string | null => codes().find(([i]) => i === id)?.[1] ?? null;
