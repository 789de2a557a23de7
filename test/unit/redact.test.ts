import { describe, expect, it } from 'vitest';
import { redactUrl } from '../../src/core/redact.ts';

describe('redactUrl', () => {
  it('hides the password of a URL, in its user info or its query, and keeps the rest', () => {
    expect(redactUrl('postgres://pybox:s3cret@db:5432/pybox')).toBe('postgres://pybox:***@db:5432/pybox');
    expect(redactUrl('redis://:s3cret@cache:6379/0')).toBe('redis://:***@cache:6379/0');
    expect(redactUrl('postgres://db/pybox?user=a&password=s3cret')).toBe('postgres://db/pybox?user=a&password=***');
    expect(redactUrl('redis://cache:6379')).toBe('redis://cache:6379');
  });

  it('never echoes what does not parse (it may be a secret)', () => {
    expect(redactUrl('s3cret not a url')).not.toContain('s3cret');
  });
});
