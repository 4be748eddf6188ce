import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  CHANNEL_PATH,
  CHANNEL_PROTOCOL,
  CHANNEL_WINDOW_HEADER,
  type BroadcastRequest,
  type ChannelCall,
  type DeliverRequest,
  type DeliverResult,
} from '@pushline/protocol';
import { silentLogger } from '@pushline/telemetry';
import { ChannelServer } from '@pushline/delivery';

/**
 * A real internal port with the real channel server, playing a connection server for this
 * library's tests: it "holds" the connections in `connections` and answers deliveries the way the
 * real server does (delivered to that very connection, not_connected otherwise). `onDeliver`
 * overrides an answer, e.g. to hold it.
 */
export interface StubServer {
  readonly url: string;
  readonly serverId: string;
  /** deviceId → connectionId of the devices "connected" here. */
  readonly connections: Map<string, string>;
  readonly calls: { op: string; req: unknown }[];
  onDeliver: ((req: DeliverRequest) => Promise<DeliverResult> | undefined) | undefined;
  broadcastDelivered: number;
  /** Channels accepted so far. */
  readonly channels: number;
  close(): Promise<void>;
}

export async function startStubServer(options: {
  token: string;
  serverId: string;
  window?: number;
}): Promise<StubServer> {
  const http = createServer();
  let channels = 0;
  const stub = {
    url: '',
    serverId: options.serverId,
    connections: new Map<string, string>(),
    calls: [] as { op: string; req: unknown }[],
    onDeliver: undefined as StubServer['onDeliver'],
    broadcastDelivered: 0,
    get channels() {
      return channels;
    },
    close: async () => {},
  };
  http.on('upgrade', () => channels++);
  const channel = new ChannelServer({
    server: http,
    internalToken: options.token,
    maxJsonDepth: 32,
    logger: silentLogger(),
    ...(options.window !== undefined ? { window: options.window } : {}),
    handlers: {
      deliver: async (req) => {
        stub.calls.push({ op: 'deliver', req });
        const custom = stub.onDeliver?.(req);
        if (custom) return custom;
        const here = stub.connections.get(req.deviceId);
        return here !== undefined && (req.connectionId === undefined || req.connectionId === here)
          ? { outcome: 'delivered', latencyMs: 1 }
          : { outcome: 'not_connected', reason: 'not_connected_here', latencyMs: 0 };
      },
      broadcast: async (req: BroadcastRequest) => {
        stub.calls.push({ op: 'broadcast', req });
        return { delivered: stub.broadcastDelivered, latencyMs: 1 };
      },
      replaced: (notice) => {
        stub.calls.push({ op: 'replaced', req: notice });
        return stub.connections.get(notice.deviceId) === notice.connectionId;
      },
    },
  });
  channel.start();
  const url = await listen(http);
  return Object.assign(stub, {
    url,
    close: async () => {
      await channel.close();
      await closeHttp(http);
    },
  });
}

/**
 * A channel peer the test drives frame by frame: it accepts the handshake like a connection
 * server (or answers `status` instead) and hands each calls frame to the test, which answers,
 * stays silent or cuts the connection.
 */
export interface RawPeer {
  readonly url: string;
  /** Sockets of accepted channels, newest last. */
  readonly sockets: WebSocket[];
  /** Calls frames received, newest last. */
  readonly frames: ChannelCall[][];
  /** Waits for the next calls frame. */
  nextFrame(): Promise<ChannelCall[]>;
  send(ws: WebSocket, frame: unknown): void;
  close(): Promise<void>;
}

export async function startRawPeer(options: { status?: number; window?: number } = {}): Promise<RawPeer> {
  const http = createServer();
  const wss = new WebSocketServer({ noServer: true, handleProtocols: () => CHANNEL_PROTOCOL });
  wss.on('headers', (headers) => headers.push(`${CHANNEL_WINDOW_HEADER}: ${options.window ?? 1024}`));
  const sockets: WebSocket[] = [];
  const frames: ChannelCall[][] = [];
  let waiter: ((calls: ChannelCall[]) => void) | undefined;
  http.on('upgrade', (req, socket, head) => {
    if (options.status !== undefined || req.url !== CHANNEL_PATH) {
      socket.end(`HTTP/1.1 ${options.status ?? 404} Refused\r\ncontent-length: 0\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.push(ws);
      ws.on('message', (data: Buffer) => {
        const { calls } = JSON.parse(data.toString('utf8')) as { calls: ChannelCall[] };
        frames.push(calls);
        const w = waiter;
        waiter = undefined;
        w?.(calls);
      });
    });
  });
  const url = await listen(http);
  return {
    url,
    sockets,
    frames,
    nextFrame: () => new Promise((resolve) => (waiter = resolve)),
    send: (ws, frame) => ws.send(JSON.stringify(frame)),
    close: async () => {
      for (const ws of sockets) ws.terminate();
      await closeHttp(http);
    },
  };
}

async function listen(http: Server): Promise<string> {
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const { port } = http.address() as AddressInfo;
  return `http://127.0.0.1:${port}`;
}

function closeHttp(http: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    http.close(() => resolve());
    http.closeAllConnections();
  });
}

/** A loopback URL where nothing listens: a server that is gone. */
export async function closedPortUrl(): Promise<string> {
  const http = createServer();
  const url = await listen(http);
  await closeHttp(http);
  return url;
}
