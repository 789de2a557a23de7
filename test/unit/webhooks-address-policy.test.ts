// Which webhook URLs pybox may call: the syntax check at submission, every address form judged,
// the operator's allow list (names, addresses, ranges) and allowPublic, and malformed allow entries
// refused when the configuration is loaded.
import { describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.ts';
import { configErrorMessage } from '../../src/config/load.ts';
import { AddressPolicy, addressKind, allowEntryProblem, checkWebhookUrl, type ResolvedAddress, type Resolver } from '../../src/webhooks/address-policy.ts';

/** A resolver with fixed answers that counts its calls; unknown names fail like NXDOMAIN. */
function fixedResolver(answers: Record<string, string[]>): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const resolve = async (host: string): Promise<ResolvedAddress[]> => {
    calls.push(host);
    const list = answers[host];
    if (!list) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return list.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  return Object.assign(resolve, { calls });
}

const noDns: Resolver = async (host) => {
  throw new Error(`no lookup expected, got ${host}`);
};

describe('checkWebhookUrl', () => {
  it.each(['http://hooks.example.com/x', 'https://hooks.example.com:8443/a/b?c=d', 'http://[2606:4700::1]/', 'http://10.0.0.1:65535/'])('accepts %s', (url) => {
    expect(checkWebhookUrl(url).ok).toBe(true);
  });

  it.each([
    ['ftp://hooks.example.com/', /http or https/],
    ['javascript:alert(1)', /http or https/],
    ['file:///etc/passwd', /http or https/],
    ['http://user:pw@hooks.example.com/', /user name or password/],
    ['http://user@hooks.example.com/', /user name or password/],
    ['http://hooks.example.com:0/', /port/],
    ['http://hooks.example.com:65536/', /not a valid URL/],
    ['http://hooks example.com/', /whitespace/],
    ['not a url', /whitespace/],
    ['hooks.example.com/x', /not a valid URL/],
    [`http://hooks.example.com/${'a'.repeat(2100)}`, /at most 2048/],
  ])('refuses %s', (url, reason) => {
    const r = checkWebhookUrl(url);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });
});

describe('addressKind', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'shared (carrier-grade NAT)'],
    ['169.254.169.254', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['240.0.0.1', 'reserved'],
    ['192.0.2.1', 'documentation'],
    ['198.18.0.1', 'benchmarking'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['febf::1', 'link-local'],
    ['fc00::1', 'unique-local'],
    ['fd00:ec2::254', 'unique-local'],
    ['ff02::1', 'multicast'],
    ['fec0::1', 'site-local'],
    ['2001:db8::1', 'documentation'],
    ['2001::1', 'reserved'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['0:0:0:0:0:ffff:a9fe:a9fe', 'link-local'],
    ['::ffff:10.0.0.1', 'private'],
    ['::127.0.0.1', 'reserved'],
    ['::ffff:0:127.0.0.1', 'reserved'],
    ['64:ff9b::10.0.0.1', 'private, embedded 10.0.0.1'],
    ['64:ff9b::169.254.169.254', 'link-local, embedded 169.254.169.254'],
    ['2002:7f00:1::1', 'loopback, embedded 127.0.0.1'],
    ['4000::1', 'reserved'],
  ])('%s is %s', (address, kind) => {
    expect(addressKind(address)).toBe(kind);
  });

  it.each(['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '11.0.0.1', '2606:4700:4700::1111', '2a00:1450::1', '::ffff:8.8.8.8', '64:ff9b::8.8.8.8', '2002:808:808::1'])('%s is public', (address) => {
    expect(addressKind(address)).toBeNull();
  });

  it('throws for what is not an address', () => {
    expect(() => addressKind('example.com')).toThrow(/not an IP address/);
  });
});

describe('AddressPolicy', () => {
  const defaults = { allow: [] as string[], allowPublic: true };

  // The URL parser rewrites these to 127.0.0.1 or 0.0.0.0, so they never reach DNS.
  it.each([
    'http://127.0.0.1/',
    'http://2130706433/',
    'http://0x7f.1/',
    'http://0177.0.0.1/',
    'http://127.1/',
    'http://%31%32%37.0.0.1/',
    'http://127.0.0.1./',
    'http://0x7f000001./',
    'http://\uff11\uff12\uff17.0.0.1/',
    'http://[::]/',
    'http://0/',
    'http://[::1]/',
    'http://[::ffff:127.0.0.1]/',
    'http://[0:0:0:0:0:ffff:7f00:1]/',
    'http://[::ffff:169.254.169.254]/latest/meta-data/',
    'http://169.254.169.254/latest/meta-data/',
    'http://[fd00:ec2::254]/',
    'http://192.168.0.1:8080/',
  ])('refuses %s without asking DNS', async (url) => {
    const policy = new AddressPolicy(defaults, noDns);
    expect(policy.screen(url)).toMatch(/not in webhooks\.allow/);
    const decision = await policy.check(url);
    expect(decision).toMatchObject({ allowed: false, permanent: true });
  });

  it('allows a public address literal and connects to it', async () => {
    const decision = await new AddressPolicy(defaults, noDns).check('https://[2606:4700::1]:8443/x');
    expect(decision).toMatchObject({ allowed: true, host: '2606:4700::1', addresses: [{ address: '2606:4700::1', family: 6 }] });
  });

  it('judges every address a name resolves to: one private one refuses the name', async () => {
    const resolver = fixedResolver({ 'mixed.example': ['93.184.215.14', '10.0.0.7'], 'public.example': ['93.184.215.14', '2606:2800:21f:cb07::1'] });
    const policy = new AddressPolicy(defaults, resolver);
    const refused = await policy.check('https://mixed.example/hook');
    expect(refused).toEqual({ allowed: false, permanent: true, reason: 'mixed.example resolves to 10.0.0.7: 10.0.0.7 is private (not in webhooks.allow)' });
    const allowed = await policy.check('https://public.example/hook');
    expect(allowed).toMatchObject({
      allowed: true,
      host: 'public.example',
      addresses: [
        { address: '93.184.215.14', family: 4 },
        { address: '2606:2800:21f:cb07::1', family: 6 },
      ],
    });
    expect(resolver.calls).toEqual(['mixed.example', 'public.example']);
  });

  it('refuses names that resolve to loopback, IPv4-mapped loopback or metadata addresses', async () => {
    const policy = new AddressPolicy(defaults, fixedResolver({ localhost: ['127.0.0.1', '::1'], 'mapped.example': ['::ffff:127.0.0.1'], 'meta.example': ['169.254.169.254'] }));
    expect(await policy.check('http://LOCALHOST./x')).toMatchObject({ allowed: false, permanent: true, reason: expect.stringMatching(/loopback/) });
    expect(await policy.check('http://mapped.example/')).toMatchObject({ allowed: false, reason: expect.stringMatching(/::ffff:127\.0\.0\.1 is loopback/) });
    expect(await policy.check('http://meta.example/')).toMatchObject({ allowed: false, reason: expect.stringMatching(/link-local/) });
  });

  it('a lookup that fails, or answers nothing, may be tried again later', async () => {
    const policy = new AddressPolicy(defaults, fixedResolver({ 'empty.example': [] }));
    expect(await policy.check('http://nowhere.example/')).toEqual({ allowed: false, permanent: false, reason: 'cannot resolve nowhere.example (ENOTFOUND)' });
    expect(await policy.check('http://empty.example/')).toMatchObject({ allowed: false, permanent: false });
  });

  it('a bad URL is refused for good without a lookup', async () => {
    expect(await new AddressPolicy(defaults, noDns).check('http://u:p@x.example/')).toMatchObject({ allowed: false, permanent: true, reason: expect.stringMatching(/user name/) });
  });

  it('allow by address and by CIDR range lets those private addresses through, and only those', async () => {
    const policy = new AddressPolicy({ allow: ['127.0.0.1', '10.20.0.0/16', 'fd00::/8'], allowPublic: true }, fixedResolver({ 'svc.internal': ['10.20.3.4'], 'other.internal': ['10.21.0.1'] }));
    expect(policy.screen('http://127.0.0.1:9000/')).toBeNull();
    expect(policy.screen('http://[::ffff:127.0.0.1]/')).toBeNull();
    expect(policy.screen('http://127.0.0.2/')).toMatch(/loopback/);
    expect(policy.screen('http://[fd12::1]/')).toBeNull();
    expect(policy.screen('http://[fc00::1]/')).toMatch(/unique-local/);
    expect(await policy.check('http://svc.internal/')).toMatchObject({ allowed: true, addresses: [{ address: '10.20.3.4', family: 4 }] });
    expect(await policy.check('http://other.internal/')).toMatchObject({ allowed: false, reason: expect.stringMatching(/10\.21\.0\.1 is private/) });
  });

  it('an IPv4-mapped range in allow covers the IPv4 addresses', () => {
    const policy = new AddressPolicy({ allow: ['::ffff:10.0.0.0/104'], allowPublic: true }, noDns);
    expect(policy.screen('http://10.9.9.9/')).toBeNull();
    expect(policy.screen('http://11.0.0.1/')).toBeNull();
    expect(policy.screen('http://172.16.0.1/')).toMatch(/private/);
  });

  it('allow by host name lets the name through whatever it resolves to, and is still pinned to its answer', async () => {
    const resolver = fixedResolver({ 'hooks.internal': ['192.168.5.5'], 'evil.internal': ['192.168.5.5'] });
    const policy = new AddressPolicy({ allow: ['Hooks.Internal.'], allowPublic: false }, resolver);
    expect(await policy.check('http://hooks.internal.:8080/x')).toMatchObject({ allowed: true, host: 'hooks.internal', addresses: [{ address: '192.168.5.5', family: 4 }] });
    expect(await policy.check('http://evil.internal/')).toMatchObject({ allowed: false, permanent: true });
    expect(resolver.calls).toEqual(['hooks.internal', 'evil.internal']);
  });

  it('with allowPublic false only allow is called', async () => {
    const policy = new AddressPolicy({ allow: ['203.0.113.0/24', '8.8.8.8'], allowPublic: false }, fixedResolver({ 'public.example': ['1.1.1.1'] }));
    expect(policy.screen('http://8.8.8.8/')).toBeNull();
    expect(policy.screen('http://8.8.4.4/')).toMatch(/allowPublic is false/);
    expect(policy.screen('http://203.0.113.9/')).toBeNull();
    expect(await policy.check('https://public.example/')).toMatchObject({ allowed: false, permanent: true, reason: expect.stringMatching(/allowPublic is false/) });
  });

  it('a host name is not judged at submission (only at delivery)', () => {
    expect(new AddressPolicy(defaults, noDns).screen('https://anything.example/')).toBeNull();
  });

  it('refuses to be built with a malformed allow entry', () => {
    expect(() => new AddressPolicy({ allow: ['10.0.0.0/99'], allowPublic: true })).toThrow(/webhooks\.allow: "10\.0\.0\.0\/99" is not a CIDR range/);
  });
});

describe('webhooks.allow entries in the configuration', () => {
  it.each(['hooks.internal', 'HOOKS.internal.', 'my_host', 'bücher.example', '127.0.0.1', '10.0.0.0/8', '10.1.2.3/8', '::1', '[::1]', 'fc00::/7', '[fd00::]/8', '0.0.0.0/0'])('accepts %s', (entry) => {
    expect(allowEntryProblem(entry)).toBeNull();
    expect(ConfigSchema.safeParse({ webhooks: { allow: [entry] } }).success).toBe(true);
  });

  it.each([
    ['http://hooks.internal', /not a URL/],
    ['hooks.internal/path', /not a CIDR range/],
    ['hooks.internal:8080', /without a port/],
    ['[::1]:80', /without a port/],
    ['10.0.0.0/33', /prefix must be a number from 0 to 32/],
    ['fc00::/129', /from 0 to 128/],
    ['10.0.0.0/', /prefix/],
    ['10.0.0/8', /is not an IP address/],
    ['*.internal', /not a valid host name/],
    ['a..b', /not a valid host name/],
    ['-bad.example', /not a valid host name/],
    ['127.1', /not a valid host name/],
    ['0x7f000001', /not a valid host name/],
    [' 10.0.0.1', /spaces/],
    ['user@host', /not a URL/],
    ['[hooks.internal]', /not an IPv6 address/],
  ])('refuses %s', (entry, message) => {
    expect(allowEntryProblem(entry)).toMatch(message);
  });

  it('names the bad entry when the configuration is loaded', () => {
    const parsed = ConfigSchema.safeParse({ webhooks: { allow: ['10.0.0.0/8', 'https://hooks.internal/x'] } });
    expect(parsed.success).toBe(false);
    if (!parsed.success) {
      expect(configErrorMessage(parsed.error, 'pybox.yaml')).toContain('invalid setting webhooks.allow.1: "https://hooks.internal/x" must be a host name, an IP address or a CIDR range, not a URL');
    }
  });
});
