// A server's URL as it may be shown (logs, errors, the CLI): its password replaced, wherever the
// URL keeps one (user info, or a `password` query parameter as PostgreSQL allows).
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString();
  } catch {
    return '(a URL that does not parse)';
  }
}
