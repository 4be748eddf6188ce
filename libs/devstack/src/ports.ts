import { readFileSync } from 'node:fs';
import net from 'node:net';

function listenOn(host: string, port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port, host, exclusive: true }, () => resolve(server));
  });
}

/** Lowest port of the pool free ports are drawn from (below it: well-known and registered services). */
const POOL_START = 10_000;
const POOL_TRIES = 20;

/**
 * The first port the kernel hands to outgoing connections (Linux: ip_local_port_range), or
 * undefined where that cannot be read.
 */
function ephemeralRangeStart(): number | undefined {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/);
    const start = Number(low);
    return Number.isInteger(start) && start > POOL_START + 1_000 ? start : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Listens on a free port below the kernel's ephemeral range, else on one the kernel picks. A port
 * handed to a child process is bound only later; one from the ephemeral range can meanwhile become
 * the local port of any outgoing connection on the host (a balancer's health checks, a client's
 * reconnects), and the child then fails with EADDRINUSE. Ports below the range are never used that
 * way, so only a listener can take them.
 */
async function listenFree(host: string): Promise<net.Server> {
  const end = ephemeralRangeStart();
  if (end !== undefined) {
    for (let i = 0; i < POOL_TRIES; i++) {
      const port = POOL_START + Math.floor(Math.random() * (end - POOL_START));
      try {
        return await listenOn(host, port);
      } catch {
        // Taken (or not ours to bind): draw another.
      }
    }
  }
  return listenOn(host, 0);
}

function portOf(server: net.Server): number {
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('listening socket has no TCP address');
  return address.port;
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** A port that was free a moment ago. Another process may still take it before we bind, so callers retry on EADDRINUSE. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const [port] = await freePorts(1, host);
  if (port === undefined) throw new Error('no free port');
  return port;
}

/** `count` distinct free ports; all are held open together so none is drawn twice. */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) servers.push(await listenFree(host));
    return servers.map(portOf);
  } finally {
    await Promise.all(servers.map(close));
  }
}

/** Whether a TCP connection to host:port succeeds within `timeoutMs`. */
export function canConnect(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Sends `request` on a fresh connection and resolves with everything received once `isComplete`
 * says the reply is whole. Rejects on connect error, early close, or timeout.
 */
export function exchange(
  host: string,
  port: number,
  request: Buffer,
  isComplete: (received: Buffer) => boolean,
  timeoutMs: number,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    let received = Buffer.alloc(0);
    let settled = false;
    const finish = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (err === undefined) resolve(received);
      else reject(err);
    };
    socket.setTimeout(timeoutMs, () =>
      finish(new Error(`no complete reply from ${host}:${port} within ${timeoutMs} ms`)),
    );
    socket.once('connect', () => socket.write(request));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (isComplete(received)) finish(undefined);
    });
    socket.once('error', (err) => finish(err));
    socket.once('close', () =>
      finish(new Error(`connection to ${host}:${port} closed before a complete reply`)),
    );
  });
}
