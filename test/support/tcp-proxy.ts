import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

/**
 * A TCP relay between a client and a real server that can partition the two: `partition()` stops
 * forwarding in both directions while every socket stays open, as a dropped network path (or a
 * server that stopped answering) looks to the client; `heal()` lets the held bytes through again.
 */
export interface TcpProxy {
  readonly port: number;
  partition(): void;
  heal(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  /** Bytes read while partitioned, per destination, in order. */
  const held = new Map<Socket, Buffer[]>();
  let partitioned = false;
  const forward = (from: Socket, to: Socket) =>
    from.on('data', (chunk: Buffer) => {
      if (partitioned) {
        held.set(to, [...(held.get(to) ?? []), chunk]);
        return;
      }
      to.write(chunk);
    });
  const server = createServer((client) => {
    const upstream = connect(target);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        held.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return {
    port: (server.address() as AddressInfo).port,
    partition() {
      partitioned = true;
    },
    heal() {
      partitioned = false;
      for (const [to, chunks] of held) for (const c of chunks) to.write(c);
      held.clear();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
