import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ConnectionServerConfig } from '@pushline/config';
import type { Logger } from '@pushline/telemetry';
import { createAdapter, createShardedAdapter } from '@socket.io/redis-adapter';
import type { Redis } from 'ioredis';
import { Server, type Socket } from 'socket.io';

/** Handshakes held at once before new ones are refused (see `maxPendingHandshakes`). */
export const DEFAULT_MAX_PENDING_HANDSHAKES = 4000;

/** Options of the socket.io server devices connect to. */
export interface SocketServerOptions {
  readonly config: ConnectionServerConfig;
  /** The caller's client; the server duplicates it for the adapter and owns the duplicates. */
  readonly redis: Redis;
  readonly logger: Logger;
  /**
   * Handshakes (engine connection opened, device not yet authenticated) held at once; past it new
   * ones are refused at the HTTP upgrade, before any work, and the device retries with backoff
   * (elsewhere). Bounds the queueing delay of a reconnect storm below the handshake timeout, so
   * the server does not spend its CPU on handshakes the devices have already given up on.
   * Default 4000: in a 19k-device storm over two servers, 1000 refused about 15 000 attempts,
   * each costing the server and the device a round of work and the device a backoff, and the
   * storm took 18.7 s; with 4000 (and the queue bound below at 4 s) about 2 000 and 13.2 s.
   */
  readonly maxPendingHandshakes?: number;
  /**
   * New handshakes are also refused while the oldest pending one has waited this long: the count
   * alone cannot tell a fast server from a starved one. Default half the handshake bound
   * (PUSHLINE_HANDSHAKE_TIMEOUT_MS, 8 s: 4 s), so an admitted handshake keeps half its budget.
   */
  readonly maxHandshakeQueueMs?: number;
  /** Called for every handshake refused by `maxPendingHandshakes`. */
  readonly onBusy?: () => void;
}

/**
 * Pending connections the kernel queues before accept(). Node's default (511) overflows when
 * thousands of devices reconnect within a second, and a dropped SYN costs the device a 1 s, then
 * 3 s TCP retransmit before it is even seen. Linux caps it at net.core.somaxconn.
 */
const LISTEN_BACKLOG = 4096;

/** The parts of an engine.io connection this server touches. */
interface EngineConnection {
  request: unknown;
  readonly readyState: string;
}

/** Longest a closed handshake may keep its admission slot while the limit is reached. */
const PRUNE_INTERVAL_MS = 100;

/**
 * The device-facing socket.io server: WebSocket only unless polling is allowed, no connection
 * state recovery (the Redis adapter does not support it; the offline inbox covers missed
 * messages), and a Redis adapter so topic rooms and acked broadcasts span all servers.
 */
export class SocketServer {
  readonly io: Server;
  readonly http: HttpServer;
  readonly #o: SocketServerOptions;
  readonly #adapterClients: Redis[] = [];
  /**
   * Engine connections not yet authenticated → when they opened, oldest first. One that closes
   * before authenticating is dropped when it is next looked at (#prune): a close listener per
   * connection would outlive the handshake, since adding one grows the connection's listener
   * array for good (about 150 B per idle connection).
   */
  readonly #pending = new Map<EngineConnection, number>();
  /**
   * The pending handshakes whose client asked to join (its CONNECT packet was read), in that order.
   * Only these measure how far behind the server is: an engine connection that never asks would
   * otherwise age until `connectTimeout` and, alone, make admission refuse every device.
   */
  readonly #asking = new Map<EngineConnection, number>();
  #prunedAt = 0;
  #url: string | undefined;

  constructor(options: SocketServerOptions) {
    this.#o = options;
    const { config } = options;
    const maxPending = options.maxPendingHandshakes ?? DEFAULT_MAX_PENDING_HANDSHAKES;
    const maxQueueMs = options.maxHandshakeQueueMs ?? Math.floor(config.PUSHLINE_HANDSHAKE_TIMEOUT_MS / 2);
    this.http = createServer();
    this.io = new Server(this.http, {
      transports: config.PUSHLINE_ALLOW_POLLING ? ['polling', 'websocket'] : ['websocket'],
      pingInterval: config.PUSHLINE_PING_INTERVAL_MS,
      pingTimeout: config.PUSHLINE_PING_TIMEOUT_MS,
      // The handshake middleware answers `handshake_timeout` within PUSHLINE_HANDSHAKE_TIMEOUT_MS;
      // this closes, a little later, a client that never even asks to join the namespace.
      connectTimeout: config.PUSHLINE_HANDSHAKE_TIMEOUT_MS + 1_000,
      maxHttpBufferSize: config.PUSHLINE_MAX_FRAME_BYTES,
      perMessageDeflate: false,
      httpCompression: false,
      serveClient: false,
      allowEIO3: false,
      cleanupEmptyChildNamespaces: true,
      allowRequest: (_req, callback) => {
        // At the limit, closed handshakes may still hold slots: look for them (not on every request).
        if (this.#pending.size >= maxPending) this.#prune(PRUNE_INTERVAL_MS);
        const waited = this.#oldestPendingMs();
        if (this.#pending.size < maxPending && (waited === undefined || waited < maxQueueMs)) {
          return callback(null, true);
        }
        options.onBusy?.();
        callback('server busy', false);
      },
    });
    this.io.use((socket, next) => {
      const openedAt = this.#pending.get(socket.conn);
      if (openedAt !== undefined) this.#asking.set(socket.conn, openedAt);
      next();
    });
    this.io.engine.on('connection', (raw: EngineConnection) => {
      this.#pending.set(raw, Date.now());
      // The handshake request (headers, socket references) is not needed after the upgrade;
      // dropping it saves memory per connection (socket.io docs, "Memory usage").
      raw.request = null;
    });
  }

  /** Handshakes in flight: engine connections not yet authenticated nor closed. */
  get pendingHandshakes(): number {
    this.#prune(0);
    return this.#pending.size;
  }

  /** The device behind `socket` authenticated: its engine connection no longer counts as pending. */
  authenticated(socket: Socket): void {
    this.#pending.delete(socket.conn);
    this.#asking.delete(socket.conn);
  }

  /** Drops pending handshakes whose connection closed, unless it did so less than `minIntervalMs` ago. */
  #prune(minIntervalMs: number): void {
    const now = Date.now();
    if (now - this.#prunedAt < minIntervalMs) return;
    this.#prunedAt = now;
    for (const raw of this.#pending.keys()) {
      if (raw.readyState !== 'closed') continue;
      this.#pending.delete(raw);
      this.#asking.delete(raw);
    }
  }

  /**
   * How long the oldest handshake that asked to join has waited since its connection opened (a Map
   * iterates in insertion order), or undefined when none is pending; finished and closed ones found
   * on the way are dropped.
   */
  #oldestPendingMs(): number | undefined {
    for (const [raw, openedAt] of this.#asking) {
      if (raw.readyState !== 'closed' && this.#pending.has(raw)) return Date.now() - openedAt;
      this.#asking.delete(raw);
      this.#pending.delete(raw);
    }
    return undefined;
  }

  /**
   * When the engine connection under a socket opened, the start of its handshake budget. Asked
   * while the handshake is pending; now if it is not (any more).
   */
  openedAt(socket: Socket): number {
    return this.#pending.get(socket.conn) ?? Date.now();
  }

  get url(): string {
    if (!this.#url) throw new Error('socket server not started');
    return this.#url;
  }

  /** Subscribes the adapter and listens; resolves with the device URL. */
  async start(): Promise<string> {
    await this.#attachAdapter();
    const { config } = this.#o;
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(
        { port: config.PUSHLINE_PORT, host: config.PUSHLINE_HOST, backlog: LISTEN_BACKLOG },
        () => {
          this.http.off('error', reject);
          resolve();
        },
      );
    });
    const address = this.http.address() as AddressInfo;
    const host =
      address.address === '0.0.0.0' || address.address === '::'
        ? '127.0.0.1'
        : address.family === 'IPv6'
          ? `[${address.address}]`
          : address.address;
    this.#url = `http://${host}:${address.port}`;
    return this.#url;
  }

  async #attachAdapter(): Promise<void> {
    const { config, redis, logger } = this.#o;
    // Never auto-pipelined: a subscriber's (S)SUBSCRIBE must not wait in, or ride with, a batch.
    const pub = redis.duplicate({ enableAutoPipelining: false });
    const sub = redis.duplicate({ enableAutoPipelining: false });
    for (const [role, client] of [
      ['pub', pub],
      ['sub', sub],
    ] as const) {
      this.#adapterClients.push(client);
      client.on('error', (err: Error) => logger.warn({ err, role }, 'socket.io adapter redis error'));
    }
    const prefix = `${config.PUSHLINE_KEY_PREFIX}socket.io`;
    this.io.adapter(
      config.PUSHLINE_SOCKETIO_ADAPTER === 'sharded'
        ? createShardedAdapter(pub, sub, {
            channelPrefix: prefix,
            subscriptionMode: config.PUSHLINE_SOCKETIO_SUBSCRIPTION_MODE,
          })
        : createAdapter(pub, sub, { key: prefix }),
    );
    // Replies come back in command order on one connection, so once this PING is answered the
    // adapter's (S)SUBSCRIBE before it is active and no cross-server broadcast is missed.
    await Promise.all([pub.ping(), sub.ping()]);
  }

  /** Closes every socket, the HTTP server, the adapter and its Redis clients. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      // io.close() also closes the underlying HTTP server; its callback reports "not running"
      // when listen never happened, which is fine here.
      void this.io.close(() => resolve());
    });
    await Promise.allSettled(this.#adapterClients.map((c) => c.quit()));
    for (const c of this.#adapterClients) c.disconnect();
  }
}
