import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  BroadcastRequest,
  DeliverRequest,
  type BroadcastResult,
  type DeliverResult,
} from '@pushline/protocol';

/**
 * A real HTTP server playing a connection server's internal endpoint for this library's tests:
 * it "holds" the connections in `connections` and answers deliveries the way the real server
 * does (delivered to that very connection, not_connected otherwise). `onRequest` overrides the
 * answer, e.g. to hang, reset the socket or send a bad status.
 */
export interface StubServer {
  readonly url: string;
  readonly serverId: string;
  /** deviceId → connectionId of the devices "connected" here. */
  readonly connections: Map<string, string>;
  readonly requests: { path: string; headers: IncomingHttpHeaders; body: unknown }[];
  /** TCP connections accepted so far (keep-alive reuse shows as fewer sockets than requests). */
  readonly sockets: number;
  onRequest: ((req: RecordedRequest, res: ServerResponse, socket: Socket) => boolean) | undefined;
  broadcastDelivered: number;
  close(): Promise<void>;
}

export interface RecordedRequest {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: unknown;
}

export async function startStubServer(options: { token: string; serverId: string }): Promise<StubServer> {
  let sockets = 0;
  const stub: StubServer = {
    url: '',
    serverId: options.serverId,
    connections: new Map(),
    requests: [],
    get sockets() {
      return sockets;
    },
    onRequest: undefined,
    broadcastDelivered: 0,
    close: async () => {},
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const recorded: RecordedRequest = {
        path: req.url ?? '',
        headers: req.headers,
        body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown,
      };
      stub.requests.push(recorded);
      if (stub.onRequest?.(recorded, res, req.socket)) return;
      if (req.headers.authorization !== `Bearer ${options.token}`)
        return reply(res, 401, { error: 'unauthorized' });
      if (recorded.path === '/internal/v1/deliver') {
        const body = DeliverRequest.parse(recorded.body);
        const here = stub.connections.get(body.deviceId);
        const result: DeliverResult =
          here !== undefined && (body.connectionId === undefined || body.connectionId === here)
            ? { outcome: 'delivered', latencyMs: 1 }
            : { outcome: 'not_connected', reason: 'not_connected_here', latencyMs: 0 };
        return reply(res, 200, result);
      }
      if (recorded.path === '/internal/v1/broadcast') {
        BroadcastRequest.parse(recorded.body);
        const result: BroadcastResult = { delivered: stub.broadcastDelivered, latencyMs: 1 };
        return reply(res, 200, result);
      }
      reply(res, 404, { error: 'not found' });
    });
  });
  server.on('connection', () => sockets++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(stub, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  });
}

export function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** A loopback URL where nothing listens: a server that is gone. */
export async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

/** Starts a streamed deliver-batch answer (`application/x-ndjson`); `line` writes one item's result. */
export function streamBatch(res: ServerResponse): {
  line(index: number, result: DeliverResult): void;
  raw(text: string): void;
  end(text?: string): void;
} {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  return {
    line: (index, result) => res.write(`${JSON.stringify({ index, result })}\n`),
    raw: (text) => res.write(text),
    end: (text) => res.end(text),
  };
}

/** A promise the test settles, for a stub answer held until the test says so. */
export function gate(): { readonly opened: Promise<void>; open(): void } {
  let open = () => {};
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

/** Whether `promise` has settled by the time the already queued callbacks ran. */
export async function isSettled(promise: Promise<unknown>): Promise<boolean> {
  const pending = Symbol('pending');
  const first = await Promise.race([
    promise.then(
      () => 'settled',
      () => 'settled',
    ),
    new Promise((resolve) => setImmediate(() => resolve(pending))),
  ]);
  return first !== pending;
}
