// Turns an Authorization header into a Caller. Every failure (no header, another scheme, a malformed,
// unknown or revoked key) gives the same answer after the same work: the presented key (or a decoy of
// the same shape) is hashed, looked up once by its hash and compared in constant time, so neither the
// answer nor its timing tells an attacker which check failed.
import { timingSafeEqual } from 'node:crypto';
import type { Caller } from '../core/caller.ts';
import type { ApiKeyLookup } from '../core/ports.ts';
import { hashApiKey, KEY_FORMAT } from './keys.ts';

const BEARER = /^Bearer +(\S+) *$/i;
/** Well-formed but never issued (its characters are not what randomBytes gives with any chance). */
const DECOY_KEY = 'pbx_' + 'A'.repeat(43);
/** Compared against when no row matched, so a miss costs the same comparison as a hit. */
const DECOY_HASH = Buffer.alloc(32);

export class Authenticator {
  private keysSeen = false;
  /** The answer given to each request still alive: its checks ask once, and agree. */
  private readonly perRequest = new WeakMap<object, Promise<boolean>>();

  constructor(private readonly keys: ApiKeyLookup) {}

  /**
   * Whether requests must carry a key: from the moment any key exists. Keys are revoked, never
   * deleted, so once true this stays true (and is not asked of the store again); revoking every
   * key locks everyone out rather than falling back to local mode.
   *
   * Given the request it is for, the store is asked once for that request however many of its
   * checks ask (the browser guard and authentication: in local mode on PostgreSQL, one round trip
   * instead of two). Never once for several requests: a request that arrives after the first key
   * was created must see it.
   */
  required(request?: object): Promise<boolean> {
    if (this.keysSeen) return Promise.resolve(true);
    if (request === undefined) return this.lookUp();
    let answer = this.perRequest.get(request);
    if (answer === undefined) {
      answer = this.lookUp();
      this.perRequest.set(request, answer);
    }
    return answer;
  }

  private async lookUp(): Promise<boolean> {
    if (!this.keysSeen) this.keysSeen = await this.keys.hasKeys();
    return this.keysSeen;
  }

  async authenticate(authorization: string | undefined): Promise<Caller | undefined> {
    const token = (authorization === undefined ? undefined : BEARER.exec(authorization)?.[1]) ?? '';
    const wellFormed = KEY_FORMAT.test(token);
    const presented = hashApiKey(wellFormed ? token : DECOY_KEY);
    // Looking up by hash leaks nothing useful through timing: an attacker controls the key, not its hash.
    const found = await this.keys.findKeyByHash(presented);
    const stored = found?.hash.length === presented.length ? found.hash : DECOY_HASH;
    const equal = timingSafeEqual(stored, presented);
    const valid = wellFormed && found !== undefined && equal && found.revokedAt === null;
    if (!valid || !found) return undefined;
    return { tenant: found.tenant, keyId: found.id, admin: found.admin, limits: found.limits };
  }
}
