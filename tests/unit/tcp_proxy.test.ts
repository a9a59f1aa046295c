/**
 * tests/kit/tcp_proxy.ts: forwards both ways, records what crossed, cuts live
 * connections, and applies the client-to-server mutator.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { joined, TcpProxy } from '../kit/tcp_proxy';

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** An echo server: "echo:", then every byte it receives. */
async function echoServer(): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.write('echo:');
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanup.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return (server.address() as net.AddressInfo).port;
}

async function proxyTo(port: number): Promise<TcpProxy> {
  const proxy = await TcpProxy.start(port);
  cleanup.push(() => proxy.close());
  return proxy;
}

function connect(port: number): Promise<{ socket: net.Socket; received: () => string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => resolve({ socket, received: () => got, closed }));
    let got = '';
    socket.on('data', (d) => (got += d.toString()));
    socket.on('error', reject);
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    cleanup.push(async () => void socket.destroy());
  });
}

async function until(pred: () => boolean): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('TcpProxy', () => {
  it('forwards both ways and records each direction per connection', async () => {
    const proxy = await proxyTo(await echoServer());
    const a = await connect(proxy.port);
    a.socket.write('hello');
    await until(() => a.received() === 'echo:hello');
    const b = await connect(proxy.port);
    b.socket.write('second');
    await until(() => b.received() === 'echo:second');
    expect(proxy.connections.map((c) => c.id)).toEqual([0, 1]);
    expect(joined(proxy.connections[0].toServer).toString()).toBe('hello');
    expect(joined(proxy.connections[0].toClient).toString()).toBe('echo:hello');
    expect(joined(proxy.connections[1].toServer).toString()).toBe('second');
  });

  it('cutAll() drops every live connection; new ones still work', async () => {
    const proxy = await proxyTo(await echoServer());
    const a = await connect(proxy.port);
    a.socket.write('x');
    await until(() => a.received() === 'echo:x');
    expect(proxy.cutAll()).toBe(1);
    await a.closed;
    expect(proxy.connections[0]).toMatchObject({ open: false, cut: true });
    expect(proxy.cutAll()).toBe(0);
    const b = await connect(proxy.port);
    b.socket.write('y');
    await until(() => b.received() === 'echo:y');
  });

  it('passes client bytes through the mutator with their stream offset', async () => {
    const proxy = await proxyTo(await echoServer());
    const offsets: number[] = [];
    proxy.mutateClientToServer((chunk, _conn, offset) => {
      offsets.push(offset);
      return Buffer.from(chunk.toString().replace('b', 'B'));
    });
    const a = await connect(proxy.port);
    a.socket.write('abc');
    await until(() => a.received() === 'echo:aBc');
    a.socket.write('de');
    await until(() => a.received() === 'echo:aBcde');
    expect(offsets).toEqual([0, 3]);
    expect(joined(proxy.connections[0].toServer).toString()).toBe('aBcde');
  });
});
