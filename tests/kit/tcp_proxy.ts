/**
 * Test kit: a TCP proxy on 127.0.0.1:0 in front of one target, for cutting live
 * connections and reading back exactly what crossed them.
 *
 *   client ──► [proxy] ──► target        each accepted connection gets its own
 *   client ◄── [proxy] ◄── target        upstream connection to the target
 *
 * `cutAll()` destroys both sides of every live connection at once (a dropped link as
 * the client and the server see it). Every connection records the bytes forwarded each
 * way, in order, so a test can decode the streams afterwards. `mutateClientToServer`
 * rewrites client bytes on their way (a corrupted chunk). Backpressure passes through: a
 * side that cannot write fast enough pauses the other side's reads.
 */
import net from 'node:net';

export interface ProxyConnection {
  /** 0, 1, 2 ... in order of arrival. */
  readonly id: number;
  /** Chunks forwarded from the client to the target (after any mutation). */
  readonly toServer: Buffer[];
  /** Chunks forwarded from the target to the client. */
  readonly toClient: Buffer[];
  /** False once either side closed or the connection was cut. */
  open: boolean;
  /** Whether cutAll() ended it. */
  cut: boolean;
}

/** Rewrites a chunk of client bytes; `offset` is where it starts in that connection's stream. */
export type Mutator = (chunk: Buffer, conn: ProxyConnection, offset: number) => Buffer;

export class TcpProxy {
  readonly connections: ProxyConnection[] = [];
  private readonly live = new Map<ProxyConnection, { client: net.Socket; upstream: net.Socket }>();
  private mutator: Mutator | null = null;
  private downMutator: Mutator | null = null;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /** A proxy to targetHost:targetPort, listening on a free loopback port. */
  static async start(targetPort: number, targetHost = '127.0.0.1', o: { record?: boolean } = {}): Promise<TcpProxy> {
    const record = o.record ?? true;
    let proxy: TcpProxy | null = null;
    const server = net.createServer((client) => proxy!.accept(client, targetHost, targetPort, record));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const a = server.address();
    proxy = new TcpProxy(server, a && typeof a === 'object' ? a.port : 0);
    return proxy;
  }

  /** Client bytes go through `fn` before they are forwarded (null: forward as they are). */
  mutateClientToServer(fn: Mutator | null): void {
    this.mutator = fn;
  }

  /** Server bytes go through `fn` before they are forwarded (an empty buffer drops them). */
  mutateServerToClient(fn: Mutator | null): void {
    this.downMutator = fn;
  }

  /** Destroys both sides of every live connection; returns how many were cut. */
  cutAll(): number {
    let n = 0;
    for (const [conn, s] of this.live) {
      conn.cut = true;
      conn.open = false;
      s.client.destroy();
      s.upstream.destroy();
      n++;
    }
    this.live.clear();
    return n;
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket, host: string, port: number, record: boolean): void {
    const conn: ProxyConnection = { id: this.connections.length, toServer: [], toClient: [], open: true, cut: false };
    this.connections.push(conn);
    const upstream = net.connect({ host, port });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    this.live.set(conn, { client, upstream });
    let fromClient = 0;
    client.on('data', (chunk: Buffer) => {
      const out = this.mutator ? this.mutator(chunk, conn, fromClient) : chunk;
      fromClient += chunk.length;
      // The socket may reuse nothing, but a mutator may return its input: copy what is kept.
      if (record) conn.toServer.push(Buffer.from(out));
      if (!upstream.write(out)) client.pause();
    });
    let fromServer = 0;
    upstream.on('data', (chunk: Buffer) => {
      const out = this.downMutator ? this.downMutator(chunk, conn, fromServer) : chunk;
      fromServer += chunk.length;
      if (record) conn.toClient.push(Buffer.from(out));
      if (out.length > 0 && !client.write(out)) upstream.pause();
    });
    upstream.on('drain', () => client.resume());
    client.on('drain', () => upstream.resume());
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    const close = () => {
      conn.open = false;
      this.live.delete(conn);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', close);
    upstream.on('close', close);
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
  }
}

/** All chunks of one direction as one buffer. */
export function joined(chunks: Buffer[]): Buffer {
  return Buffer.concat(chunks);
}
