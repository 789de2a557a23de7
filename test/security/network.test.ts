// Attack class: the network. TCP, UDP, DNS, IPv6, raw and packet sockets, odd socket families, and
// the host's own loopback services. Every address tried is a documentation address (RFC 5737,
// RFC 3849), a name under .invalid, or loopback: nothing real is ever reached, and the sandbox has
// no route to anything anyway.
import { createServer, type Server } from 'node:net';
import { describe, expect } from 'vitest';
import { battery, outOf, py, PY_ATTEMPT, runtimesUnderTest } from './support.ts';

const runtimes = await runtimesUnderTest();

const SOCKETS = `${PY_ATTEMPT}
import socket
def tcp(host, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
    finally:
        s.close()
def udp(host, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", (host, port))
    finally:
        s.close()
def sock(family, kind, proto=0):
    socket.socket(family, kind, proto).close()
`;

/** A listening server on the host, closed after the case. */
async function hostServer(path: string | number): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => s.end('host\n'));
  await new Promise<void>((resolve) => (typeof path === 'number' ? server.listen(path, '127.0.0.1', resolve) : server.listen(path, resolve)));
  const addr = server.address();
  return { server, port: typeof addr === 'object' && addr ? addr.port : 0 };
}

describe.each(runtimes)('the network under %s', (runtime) => {
  const sec = battery(runtime);
  // runc's empty network namespace answers "network unreachable"; gVisor's netstack "host unreachable".
  const unreachable = runtime === 'runc' ? 'ENETUNREACH' : 'EHOSTUNREACH';

  sec('TCP to an outside address fails at once: no route', async ({ run }) => {
    const r = await run({
      code: py(`${SOCKETS}
import time
t0 = time.monotonic()
out["tcp"] = attempt(lambda: tcp("192.0.2.1", 80))
out["tcp443"] = attempt(lambda: tcp("203.0.113.9", 443))
out["fast"] = time.monotonic() - t0 < 1  # refused at once, not after the 3 s socket timeout`),
    });
    expect(outOf(r)).toEqual({ tcp: unreachable, tcp443: unreachable, fast: true });
  });

  sec('UDP to an outside address fails: no route', async ({ run }) => {
    const r = await run({ code: py(`${SOCKETS}\nout["udp"] = attempt(lambda: udp("198.51.100.1", 53))`) });
    expect(outOf(r)).toEqual({ udp: unreachable });
  });

  sec('IPv6 has no route either', async ({ run }) => {
    const r = await run({ code: py(`${SOCKETS}\nout["tcp6"] = attempt(lambda: tcp("2001:db8::1", 80, socket.AF_INET6))\nout["udp6"] = attempt(lambda: udp("2001:db8::53", 53, socket.AF_INET6))`) });
    expect(outOf(r)).toEqual({ tcp6: unreachable, udp6: unreachable });
  });

  sec('DNS resolves nothing', async ({ run }) => {
    const r = await run({
      code: py(`
import socket
for name in ("pybox-battery.invalid", "example.invalid"):
    try:
        socket.getaddrinfo(name, 80)
        out[name] = "resolved"
    except socket.gaierror as e:
        out[name] = "gaierror"
out["numeric"] = socket.getaddrinfo("192.0.2.7", 80, socket.AF_INET)[0][4][0]`),
    });
    expect(outOf(r)).toEqual({ 'pybox-battery.invalid': 'gaierror', 'example.invalid': 'gaierror', numeric: '192.0.2.7' });
  });

  sec('raw and packet sockets are refused (EPERM)', async ({ run }) => {
    const r = await run({
      code: py(`${SOCKETS}
out["raw icmp"] = attempt(lambda: sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
out["raw ipv6"] = attempt(lambda: sock(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6))
out["packet"] = attempt(lambda: sock(17, socket.SOCK_RAW))
out["packet dgram"] = attempt(lambda: sock(17, socket.SOCK_DGRAM))`),
    });
    expect(outOf(r)).toEqual({ 'raw icmp': 'EPERM', 'raw ipv6': 'EPERM', packet: 'EPERM', 'packet dgram': 'EPERM' });
  });

  sec('odd socket families (AF_ALG, vsock, TIPC, XDP) are refused', async ({ run }) => {
    const r = await run({
      code: py(`${SOCKETS}
out["alg"] = attempt(lambda: sock(38, socket.SOCK_SEQPACKET))
out["vsock"] = attempt(lambda: sock(40, socket.SOCK_STREAM))
out["tipc"] = attempt(lambda: sock(30, socket.SOCK_RDM))
out["xdp"] = attempt(lambda: sock(44, socket.SOCK_RAW))`),
    });
    // runc: pybox's seccomp profile allows only unix, inet, inet6 and netlink (EPERM for the rest).
    // gVisor: its kernel has none of these families.
    const refused = runtime === 'runc' ? 'EPERM' : 'EAFNOSUPPORT';
    expect(outOf(r)).toEqual({ alg: refused, vsock: refused, tipc: refused, xdp: refused });
  });

  sec('the service\'s own port on the host\'s loopback is out of reach', async ({ run, url }) => {
    const port = Number(new URL(url).port);
    const r = await run({ code: py(`${SOCKETS}\nout["pybox"] = attempt(lambda: tcp("127.0.0.1", ${port}))`) });
    expect(outOf(r)).toEqual({ pybox: 'ECONNREFUSED' });
  });

  sec('a service on the host\'s loopback and an abstract unix socket of the host are out of reach', async ({ run, marker }) => {
    const tcp = await hostServer(0);
    const abstract = await hostServer(`\0${marker}`);
    try {
      const r = await run({
        code: py(`${SOCKETS}
out["tcp"] = attempt(lambda: tcp("127.0.0.1", ${tcp.port}))
def unix():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\\0${marker}")
out["abstract"] = attempt(unix)`),
      });
      expect(outOf(r)).toEqual({ tcp: 'ECONNREFUSED', abstract: 'ECONNREFUSED' });
    } finally {
      tcp.server.close();
      abstract.server.close();
    }
  });

  sec('the only interface is loopback and there is no route', async ({ run }) => {
    const r = await run({
      code: py(`
import socket
out["interfaces"] = sorted(n for _, n in socket.if_nameindex())
try:
    routes = open("/proc/net/route").read().splitlines()[1:]
except OSError:
    routes = []
out["routes"] = [l for l in routes if l.split()[0] != "lo"]`),
    });
    expect(outOf(r)).toEqual({ interfaces: ['lo'], routes: [] });
  });

  sec('loopback inside the sandbox works, and is the sandbox\'s own', async ({ run }) => {
    const r = await run({
      code: py(`
import socket, threading
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
def serve():
    c, _ = srv.accept()
    c.sendall(b"inside")
    c.close()
threading.Thread(target=serve).start()
c = socket.create_connection(("127.0.0.1", port), timeout=3)
out["got"] = c.recv(100).decode()`),
    });
    expect(outOf(r)).toEqual({ got: 'inside' });
  });
});
