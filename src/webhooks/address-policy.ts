// Where pybox may send a tenant's webhook. A webhook URL is chosen by the tenant, so without a
// policy it would be a way to make the service call its own network (cloud metadata, databases,
// admin ports). Every address a host name resolves to is judged, and the caller connects to the
// addresses judged here and no others, so a second DNS answer cannot swap in a private one.
import { lookup } from 'node:dns/promises';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { domainToASCII } from 'node:url';

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Answers every address of a host name (the deliverer's only way to a name's addresses). */
export type Resolver = (host: string) => Promise<ResolvedAddress[]>;

/** The system resolver (getaddrinfo: /etc/hosts, then DNS), every address in the order given. */
const systemResolver: Resolver = async (host) => {
  const answers = await lookup(host, { all: true, verbatim: true });
  return answers.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

/** Longest URL accepted, as in WebhookTarget. */
export const MAX_WEBHOOK_URL_LENGTH = 2048;

// ---- syntax ------------------------------------------------------------------------------------

export type UrlCheck = { ok: true; url: URL } | { ok: false; reason: string };

/**
 * The checks that need neither DNS nor the operator's settings: an http(s) URL with a host, no user
 * name or password, a port from 1 to 65535. For a 400 at submission; the full policy runs at delivery.
 */
export function checkWebhookUrl(raw: string): UrlCheck {
  if (raw.length > MAX_WEBHOOK_URL_LENGTH) return { ok: false, reason: `must be at most ${MAX_WEBHOOK_URL_LENGTH} characters` };
  if (/[\s\0]/.test(raw)) return { ok: false, reason: 'must not contain whitespace' };
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: 'is not a valid URL' };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { ok: false, reason: 'must be an http or https URL' };
  if (url.username !== '' || url.password !== '') return { ok: false, reason: 'must not contain a user name or password' };
  if (hostOf(url) === '') return { ok: false, reason: 'must name a host' };
  // The URL parser already refuses ports above 65535; 0 is no port a server listens on.
  if (url.port === '0') return { ok: false, reason: 'must use a port from 1 to 65535' };
  return { ok: true, url };
}

/** The URL's host as compared and resolved: no brackets around IPv6, no trailing dot, lower case. */
export function hostOf(url: URL): string {
  let h = url.hostname;
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h.toLowerCase();
}

// ---- addresses ---------------------------------------------------------------------------------

/** An address or a range of them as 4 or 16 bytes and a prefix length in bits. */
export interface Cidr {
  bytes: Uint8Array;
  prefix: number;
}

function ipv4Bytes(s: string): Uint8Array | null {
  if (!isIPv4(s)) return null;
  return Uint8Array.from(s.split('.').map(Number));
}

function ipv6Bytes(s: string): Uint8Array | null {
  const addr = s.replace(/%.*$/, ''); // a zone (fe80::1%eth0) does not change which address it is
  if (!isIPv6(addr)) return null;
  let head = addr;
  const tailV4: number[] = [];
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(addr);
  if (dotted) {
    const v4 = ipv4Bytes(dotted[2] ?? '');
    if (!v4) return null;
    tailV4.push(...v4);
    head = (dotted[1] ?? '').endsWith('::') ? (dotted[1] ?? '') : (dotted[1] ?? '').slice(0, -1);
  }
  const groupsWanted = 8 - tailV4.length / 2;
  const [left, right] = head.includes('::') ? head.split('::') : [head, undefined];
  const parse = (part: string | undefined): number[] => (part === undefined || part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const l = parse(left);
  const r = parse(right);
  const groups = right === undefined ? l : [...l, ...new Array<number>(groupsWanted - l.length - r.length).fill(0), ...r];
  if (groups.length !== groupsWanted) return null;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  out.set(tailV4, 16 - tailV4.length);
  return out;
}

function addressBytes(s: string): Uint8Array | null {
  return ipv4Bytes(s) ?? ipv6Bytes(s);
}

function contains(range: Cidr, bytes: Uint8Array): boolean {
  if (range.bytes.length !== bytes.length) return false;
  const full = range.prefix >> 3;
  for (let i = 0; i < full; i++) if (range.bytes[i] !== bytes[i]) return false;
  const rest = range.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((range.bytes[full] ?? 0) & mask) === ((bytes[full] ?? 0) & mask);
}

function cidr(text: string): Cidr {
  const [addr, bits] = text.split('/');
  const bytes = addressBytes(addr ?? '');
  if (!bytes) throw new Error(`bad built-in range ${text}`);
  return { bytes, prefix: Number(bits) };
}

/** An IPv4 address carried in an IPv6 one: IPv4-mapped (::ffff:a.b.c.d) is the same host. */
function unwrapMapped(bytes: Uint8Array): Uint8Array {
  if (bytes.length === 16 && contains(MAPPED, bytes)) return bytes.slice(12);
  return bytes;
}

const MAPPED = cidr('::ffff:0:0/96');
const NAT64 = cidr('64:ff9b::/96');
const SIX_TO_FOUR = cidr('2002::/16');
const GLOBAL_UNICAST_V6 = cidr('2000::/3');

/**
 * Addresses that are not the public internet, with why. Order matters only for the reason shown
 * (the first that contains an address names it).
 */
const SPECIAL_V4: ReadonlyArray<{ range: Cidr; kind: string }> = (
  [
  ['255.255.255.255/32', 'broadcast'],
  ['0.0.0.0/8', 'unspecified'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'shared (carrier-grade NAT)'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'reserved'],
  ['192.0.2.0/24', 'documentation'],
  ['192.88.99.0/24', 'reserved'],
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'benchmarking'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'],
  ] satisfies Array<[string, string]>
).map(([range, kind]) => ({ range: cidr(range), kind }));

const SPECIAL_V6: ReadonlyArray<{ range: Cidr; kind: string }> = (
  [
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  // IPv4-compatible (deprecated) and IPv4-translated forms: no public host is reached through them.
  ['::/96', 'reserved'],
  ['::ffff:0:0:0/96', 'reserved'],
  ['64:ff9b:1::/48', 'private'],
  ['100::/64', 'reserved'],
  // Teredo hides the IPv4 address it leads to: judge it unreachable rather than guess.
  ['2001::/32', 'reserved'],
  ['2001:2::/48', 'benchmarking'],
  ['2001:10::/28', 'reserved'],
  ['2001:20::/28', 'reserved'],
  ['2001:db8::/32', 'documentation'],
  ['3fff::/20', 'documentation'],
  ['fc00::/7', 'unique-local'],
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'site-local'],
  ['ff00::/8', 'multicast'],
  ] satisfies Array<[string, string]>
).map(([range, kind]) => ({ range: cidr(range), kind }));

function formatBytes(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return groups.join(':');
}

function classifyBytes(bytes: Uint8Array): string | null {
  if (bytes.length === 4) return SPECIAL_V4.find((s) => contains(s.range, bytes))?.kind ?? null;
  const special = SPECIAL_V6.find((s) => contains(s.range, bytes));
  if (special) return special.kind;
  // Forms that lead to an IPv4 host are judged by that host.
  if (contains(NAT64, bytes)) return embedded(bytes.slice(12));
  if (contains(SIX_TO_FOUR, bytes)) return embedded(bytes.slice(2, 6));
  if (!contains(GLOBAL_UNICAST_V6, bytes)) return 'reserved';
  return null;
}

function embedded(v4: Uint8Array): string | null {
  const kind = classifyBytes(v4);
  return kind === null ? null : `${kind}, embedded ${formatBytes(v4)}`;
}

/**
 * Why an address is not a public internet address ('loopback', 'private', ...), or null when it is.
 * IPv4-mapped IPv6 addresses are judged as the IPv4 address they are. Throws for a non-address.
 */
export function addressKind(address: string): string | null {
  const bytes = addressBytes(address);
  if (!bytes) throw new Error(`not an IP address: ${address}`);
  return classifyBytes(unwrapMapped(bytes));
}

// ---- the operator's allow list -----------------------------------------------------------------

export type AllowEntry = { kind: 'host'; name: string } | { kind: 'range'; range: Cidr; text: string };

/** Why a webhooks.allow entry is malformed, or null when it is fine (for the config schema). */
export function allowEntryProblem(entry: string): string | null {
  const parsed = parseAllowEntry(entry);
  return 'problem' in parsed ? parsed.problem : null;
}

/** A webhooks.allow entry: a host name, an IPv4 or IPv6 address, or a CIDR range of either. */
function parseAllowEntry(entry: string): AllowEntry | { problem: string } {
  const shown = JSON.stringify(entry);
  if (entry.trim() !== entry || entry === '') return { problem: `${shown} must not be empty or have spaces around it` };
  if (entry.includes('//') || /[?#@\s]/.test(entry)) {
    return { problem: `${shown} must be a host name, an IP address or a CIDR range, not a URL` };
  }
  const unbracketed = entry.startsWith('[') && entry.endsWith(']') ? entry.slice(1, -1) : entry;
  const slash = unbracketed.indexOf('/');
  if (slash >= 0) {
    const addr = unbracketed.slice(0, slash).replace(/^\[(.*)\]$/, '$1');
    const bits = unbracketed.slice(slash + 1);
    const bytes = isIP(addr) ? addressBytes(addr) : null;
    if (!bytes) return { problem: `${shown} is not a CIDR range: ${JSON.stringify(addr)} is not an IP address` };
    const max = bytes.length * 8;
    if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) return { problem: `${shown} is not a CIDR range: the prefix must be a number from 0 to ${max}` };
    return { kind: 'range', range: normalizeRange({ bytes, prefix: Number(bits) }), text: entry };
  }
  if (isIP(unbracketed)) {
    const bytes = addressBytes(unbracketed);
    if (bytes) return { kind: 'range', range: normalizeRange({ bytes, prefix: bytes.length * 8 }), text: entry };
  }
  if (unbracketed !== entry) return { problem: `${shown} is not an IPv6 address` };
  if (entry.includes(':')) return { problem: `${shown} must be a host name or an address without a port` };
  const name = normalizeHostName(entry);
  if (name === null) return { problem: `${shown} is not a valid host name, IP address or CIDR range` };
  return { kind: 'host', name };
}

/** A range written in IPv4-mapped IPv6 form covers the same hosts as its IPv4 form. */
function normalizeRange(r: Cidr): Cidr {
  if (r.bytes.length === 16 && r.prefix >= 96 && contains(MAPPED, r.bytes)) return { bytes: r.bytes.slice(12), prefix: r.prefix - 96 };
  return r;
}

function normalizeHostName(entry: string): string | null {
  const trimmed = entry.endsWith('.') ? entry.slice(0, -1) : entry;
  const ascii = domainToASCII(trimmed.toLowerCase());
  if (ascii === '' || ascii.length > 253) return null;
  const labels = ascii.split('.');
  if (!labels.every((l) => /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/.test(l))) return null;
  // The URL parser reads a name ending in a number (127.1, 0x7f.1) as an IPv4 address: write that as one.
  if (/^(?:0x[0-9a-f]*|\d+)$/.test(labels[labels.length - 1] ?? '')) return null;
  return ascii;
}

// ---- the policy --------------------------------------------------------------------------------

export interface AddressPolicySettings {
  /** webhooks.allow: host names, addresses and CIDR ranges that may be called whatever they are. */
  allow: readonly string[];
  /** webhooks.allowPublic: whether public addresses not in allow may be called. */
  allowPublic: boolean;
}

export type PolicyDecision =
  /** Call `url`, connecting only to `addresses` (each judged). */
  | { allowed: true; url: URL; host: string; addresses: ResolvedAddress[] }
  /** Not now: `permanent` when asking again cannot change the answer (a refused address, a bad URL). */
  | { allowed: false; permanent: boolean; reason: string };

/** webhooks.allow and webhooks.allowPublic applied to URLs. */
export class AddressPolicy {
  private readonly hosts = new Set<string>();
  private readonly ranges: Cidr[] = [];

  /** Throws on a malformed allow entry (the config schema refuses those first). */
  constructor(
    private readonly settings: AddressPolicySettings,
    private readonly resolve: Resolver = systemResolver,
  ) {
    for (const raw of settings.allow) {
      const entry = parseAllowEntry(raw);
      if ('problem' in entry) throw new Error(`webhooks.allow: ${entry.problem}`);
      if (entry.kind === 'host') this.hosts.add(entry.name);
      else this.ranges.push(entry.range);
    }
  }

  /**
   * At submission, without DNS: the URL's syntax, and its address when the host is an IP address.
   * Returns why the URL can never be called, or null (a host name may still be refused at delivery).
   */
  screen(raw: string): string | null {
    const syntax = checkWebhookUrl(raw);
    if (!syntax.ok) return syntax.reason;
    const host = hostOf(syntax.url);
    if (!isIP(host)) return null;
    return this.judge(host);
  }

  /** Resolves the URL's host and judges every address; the allowed decision lists the ones to connect to. */
  async check(raw: string): Promise<PolicyDecision> {
    const syntax = checkWebhookUrl(raw);
    if (!syntax.ok) return { allowed: false, permanent: true, reason: `the URL ${syntax.reason}` };
    const url = syntax.url;
    const host = hostOf(url);
    const family = isIP(host);
    if (family !== 0) {
      const problem = this.judge(host);
      if (problem !== null) return { allowed: false, permanent: true, reason: problem };
      return { allowed: true, url, host, addresses: [{ address: host, family: family === 6 ? 6 : 4 }] };
    }
    let addresses: ResolvedAddress[];
    try {
      addresses = await this.resolve(host);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      return { allowed: false, permanent: false, reason: `cannot resolve ${host}${code ? ` (${code})` : ''}` };
    }
    if (addresses.length === 0) return { allowed: false, permanent: false, reason: `cannot resolve ${host} (no addresses)` };
    for (const a of addresses) {
      if (isIP(a.address) === 0) return { allowed: false, permanent: false, reason: `the resolver answered a non-address for ${host}` };
    }
    addresses = addresses.map((a) => ({ address: a.address, family: isIP(a.address) === 6 ? 6 : 4 }));
    if (this.hosts.has(host)) return { allowed: true, url, host, addresses };
    // One bad address refuses the name: the connection could otherwise land on it.
    for (const a of addresses) {
      const problem = this.judge(a.address);
      if (problem !== null) return { allowed: false, permanent: true, reason: `${host} resolves to ${a.address}: ${problem}` };
    }
    return { allowed: true, url, host, addresses };
  }

  /** Why this address may not be called, or null. */
  private judge(address: string): string | null {
    const bytes = addressBytes(address);
    if (!bytes) return `${address} is not an IP address`;
    const plain = unwrapMapped(bytes);
    if (this.ranges.some((r) => contains(r, plain) || contains(r, bytes))) return null;
    const kind = classifyBytes(plain);
    if (kind !== null) return `${address} is ${kind} (not in webhooks.allow)`;
    if (!this.settings.allowPublic) return `${address} is not in webhooks.allow (webhooks.allowPublic is false)`;
    return null;
  }
}
