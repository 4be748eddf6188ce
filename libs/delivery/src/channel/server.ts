import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  CHANNEL_ENVELOPE_DEPTH,
  CHANNEL_MAX_FRAME_CALLS,
  CHANNEL_PATH,
  CHANNEL_PROTOCOL,
  CHANNEL_WINDOW_HEADER,
  ChannelCall,
  ChannelCallsFrame,
  checkJsonValue,
  jsonTextTooDeep,
  type BroadcastRequest,
  type BroadcastResult,
  type ChannelErrorCode,
  type ChannelResult,
  type DeliverRequest,
  type DeliverResult,
  type ReplacedNotice,
} from '@pushline/protocol';
import { closeOnce, MicroBatcher } from '@pushline/runtime';
import { stageCounter, type Counter, type Logger, type Registry } from '@pushline/telemetry';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';

/** What a connection server does with each call of the channel. */
export interface ChannelHandlers {
  /** Never rejects for a device outcome; a rejection is answered `not_connected` / `internal_error`. */
  deliver(req: DeliverRequest): Promise<DeliverResult>;
  broadcast(req: BroadcastRequest): Promise<BroadcastResult>;
  /** Closes the local connection if it is still `connectionId`; returns whether it did. */
  replaced(notice: ReplacedNotice): boolean;
}

export interface ChannelServerOptions {
  /** The internal port's server (plain or TLS); the channel takes its upgrades to `CHANNEL_PATH`. */
  readonly server: Server;
  /** Callers must present it at the handshake (`authorization: Bearer <token>`). */
  readonly internalToken: string;
  readonly handlers: ChannelHandlers;
  /** PUSHLINE_MAX_JSON_DEPTH: the deepest a payload may nest. Bounded on each frame's text. */
  readonly maxJsonDepth: number;
  readonly logger: Logger;
  /** When given, records `pushline_channel_served_total` and `pushline_channel_peers`. */
  readonly metrics?: Registry;
  /** Calls one caller may have unanswered on one connection (its credit). Default 8192. */
  readonly window?: number;
  /** Largest frame. Default 16 MiB (1 000 calls of the largest payloads fit). */
  readonly maxFrameBytes?: number;
  /** A caller that answered no ping for this long is dropped. Default 15 000. */
  readonly pingIntervalMs?: number;
  /** Longest close() waits for calls in hand to be answered. Default 2000. */
  readonly closeTimeoutMs?: number;
}

type Served = 'ok' | 'invalid' | 'window_exceeded' | 'error';

interface PeerState {
  inFlight: number;
  alive: boolean;
  /** Outcomes known this turn, written as one frame (several past the frame limit). */
  readonly results: MicroBatcher<ChannelResult>;
}

/**
 * The connection server's end of the channel (docs/internal-protocol.md): authenticates callers at
 * the WebSocket handshake, handles every call of a frame on its own, and writes each outcome as
 * soon as it is known, the outcomes of one event-loop turn in one frame.
 */
export class ChannelServer {
  readonly #options: ChannelServerOptions;
  readonly #wss: WebSocketServer;
  readonly #expected: Buffer;
  readonly #window: number;
  readonly #maxDepth: number;
  readonly #peers = new Map<WebSocket, PeerState>();
  readonly #served: Counter<'op' | 'result'> | undefined;
  readonly #onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) =>
    this.#upgrade(req, socket, head);
  #heartbeat: NodeJS.Timeout | undefined;
  #closing = false;
  readonly close: () => Promise<void>;

  constructor(options: ChannelServerOptions) {
    this.#options = options;
    this.#expected = digest(`Bearer ${options.internalToken}`);
    this.#window = options.window ?? 8192;
    this.#maxDepth = options.maxJsonDepth + CHANNEL_ENVELOPE_DEPTH;
    this.#wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: options.maxFrameBytes ?? 16 * 1024 * 1024,
      // Frames are JSON read with Buffer#toString, which needs no prior UTF-8 check.
      skipUTF8Validation: true,
      clientTracking: false,
      handleProtocols: (protocols) => (protocols.has(CHANNEL_PROTOCOL) ? CHANNEL_PROTOCOL : false),
    });
    this.#wss.on('headers', (headers) => headers.push(`${CHANNEL_WINDOW_HEADER}: ${this.#window}`));
    if (options.metrics) {
      this.#served = stageCounter({
        name: 'pushline_channel_served_total',
        help: "Calls this connection server received over the internal channel, by op and result (invalid: outside the contract; window_exceeded: beyond the caller's credit; error: handling threw).",
        labels: {
          op: ['deliver', 'broadcast', 'replaced'],
          result: ['ok', 'invalid', 'window_exceeded', 'error'],
        },
        registry: options.metrics,
      });
    }
    this.close = closeOnce(() => this.#close());
  }

  /** Callers connected now. */
  get peers(): number {
    return this.#peers.size;
  }

  start(): void {
    this.#options.server.on('upgrade', this.#onUpgrade);
    const interval = this.#options.pingIntervalMs ?? 15_000;
    this.#heartbeat = setInterval(() => {
      for (const [ws, peer] of this.#peers) {
        if (!peer.alive) {
          this.#options.logger.warn('channel caller answered no ping; dropping it');
          ws.terminate();
          continue;
        }
        peer.alive = false;
        ws.ping();
      }
    }, interval).unref();
  }

  #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== CHANNEL_PATH) return refuse(socket, 404, 'no such channel');
    // Token first: a caller without it learns nothing else about this server.
    if (!timingSafeEqual(digest(req.headers.authorization ?? ''), this.#expected)) {
      return refuse(socket, 401, 'missing or wrong internal token');
    }
    if (this.#closing) return refuse(socket, 503, 'shutting down');
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    if (!offered.includes(CHANNEL_PROTOCOL)) {
      return refuse(socket, 426, `this server speaks ${CHANNEL_PROTOCOL} only`);
    }
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws));
  }

  #accept(ws: WebSocket): void {
    const peer: PeerState = {
      inFlight: 0,
      alive: true,
      results: new MicroBatcher({
        maxBatch: CHANNEL_MAX_FRAME_CALLS,
        flush: (results) => this.#write(ws, peer, results),
        onError: (err, results) =>
          this.#options.logger.error(
            { err, results: results.length },
            'writing results to a channel caller failed',
          ),
      }),
    };
    this.#peers.set(ws, peer);
    ws.on('message', (data: RawData) => {
      peer.alive = true;
      this.#onFrame(ws, peer, data);
    });
    ws.on('pong', () => (peer.alive = true));
    ws.on('error', (err) => this.#options.logger.debug({ err }, 'channel caller error'));
    ws.on('close', () => this.#peers.delete(ws));
  }

  #onFrame(ws: WebSocket, peer: PeerState, data: RawData): void {
    const raw = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    // One pass over the text bounds every payload's depth; only a frame over it is walked call by call.
    const tooDeep = jsonTextTooDeep(raw, this.#maxDepth);
    let json: unknown;
    try {
      json = JSON.parse(raw.toString('utf8'));
    } catch {
      this.#options.logger.error('channel caller sent a frame that is not JSON; closing its channel');
      ws.close(1007, 'frame is not JSON');
      return;
    }
    const parsed = tooDeep ? undefined : ChannelCallsFrame.safeParse(json);
    if (parsed?.success) {
      for (const call of parsed.data.calls) this.#handle(peer, call);
      return;
    }
    const items: unknown = (json as { calls?: unknown } | null)?.calls;
    if (!Array.isArray(items) || items.length > CHANNEL_MAX_FRAME_CALLS) {
      this.#options.logger.error('channel caller sent a frame outside the contract; closing its channel');
      ws.close(1008, 'frame outside the contract');
      return;
    }
    // Some calls break the contract: each is answered on its own, the others handled.
    for (const item of items) {
      const call = ChannelCall.safeParse(item);
      const id: unknown = (item as { id?: unknown } | null)?.id;
      const answerable = typeof id === 'number' && Number.isSafeInteger(id) && id >= 0;
      if (!call.success) {
        if (answerable)
          this.#refuse(
            peer,
            id,
            opOf(item),
            'invalid_request',
            call.error.issues[0]?.message ?? 'invalid call',
          );
        continue;
      }
      const payload = call.data.op === 'replaced' ? undefined : call.data.req.payload;
      if (tooDeep && checkJsonValue(payload, this.#options.maxJsonDepth) === 'too_deep') {
        this.#refuse(
          peer,
          call.data.id,
          call.data.op,
          'invalid_request',
          `payload nests deeper than ${this.#options.maxJsonDepth} levels`,
        );
        continue;
      }
      this.#handle(peer, call.data);
    }
  }

  #handle(peer: PeerState, call: ChannelCall): void {
    if (peer.inFlight >= this.#window) {
      this.#refuse(peer, call.id, call.op, 'window_exceeded', `more than ${this.#window} calls unanswered`);
      return;
    }
    peer.inFlight++;
    const { handlers, logger } = this.#options;
    switch (call.op) {
      case 'deliver':
        handlers.deliver(call.req).then(
          (result) => this.#answer(peer, { id: call.id, deliver: result }, 'deliver', 'ok'),
          (err: unknown) => {
            logger.error({ err, messageId: call.req.messageId }, 'channel delivery failed');
            const result: DeliverResult = {
              outcome: 'not_connected',
              latencyMs: 0,
              reason: 'internal_error',
            };
            this.#answer(peer, { id: call.id, deliver: result }, 'deliver', 'error');
          },
        );
        return;
      case 'broadcast':
        handlers.broadcast(call.req).then(
          (result) => this.#answer(peer, { id: call.id, broadcast: result }, 'broadcast', 'ok'),
          (err: unknown) => {
            logger.error({ err, topic: call.req.topic }, 'channel broadcast failed');
            const error = { code: 'internal_error' as const, message: String(err).slice(0, 512) };
            this.#answer(peer, { id: call.id, error }, 'broadcast', 'error');
          },
        );
        return;
      case 'replaced': {
        let closed = false;
        try {
          closed = handlers.replaced(call.req);
        } catch (err) {
          logger.error({ err, deviceId: call.req.deviceId }, 'channel replaced notice failed');
        }
        this.#answer(peer, { id: call.id, replaced: { closed } }, 'replaced', 'ok');
      }
    }
  }

  #refuse(
    peer: PeerState,
    id: number,
    op: ChannelCall['op'] | undefined,
    code: ChannelErrorCode,
    message: string,
  ): void {
    peer.inFlight++;
    const served: Served = code === 'window_exceeded' ? 'window_exceeded' : 'invalid';
    this.#answer(peer, { id, error: { code, message: message.slice(0, 512) } }, op, served);
  }

  #answer(peer: PeerState, result: ChannelResult, op: ChannelCall['op'] | undefined, served: Served): void {
    peer.inFlight--;
    if (op) this.#served?.inc({ op, result: served });
    peer.results.add(result);
  }

  /** One frame of results; the last one written while shutting down closes the channel. */
  #write(ws: WebSocket, peer: PeerState, results: ChannelResult[]): void {
    if (ws.readyState !== ws.OPEN) return;
    ws.send(JSON.stringify({ results }));
    if (this.#closing && peer.inFlight === 0 && peer.results.queued === 0) ws.close(1001, 'shutting down');
  }

  async #close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#heartbeat);
    this.#options.server.off('upgrade', this.#onUpgrade);
    const closing = [...this.#peers].map(
      ([ws, peer]) =>
        new Promise<void>((resolve) => {
          ws.once('close', () => resolve());
          if (peer.inFlight === 0 && peer.results.idle) ws.close(1001, 'shutting down');
        }),
    );
    const timeoutMs = this.#options.closeTimeoutMs ?? 2000;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(closing),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    for (const ws of this.#peers.keys()) ws.terminate();
  }
}

function opOf(item: unknown): ChannelCall['op'] | undefined {
  const op: unknown = (item as { op?: unknown } | null)?.op;
  return op === 'deliver' || op === 'broadcast' || op === 'replaced' ? op : undefined;
}

function refuse(socket: Duplex, status: number, message: string): void {
  const reason = {
    401: 'Unauthorized',
    404: 'Not Found',
    426: 'Upgrade Required',
    503: 'Service Unavailable',
  }[status];
  socket.end(
    `HTTP/1.1 ${status} ${reason ?? 'Error'}\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(message)}\r\n\r\n${message}`,
    () => socket.destroy(),
  );
}

// Hashing first gives both sides the same length, which timingSafeEqual requires.
function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}
