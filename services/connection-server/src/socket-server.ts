import {
  createServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from 'node:http';
import type { Duplex } from 'node:stream';
import type { ConnectionServerConfig } from '@pushline/config';
import { PROBLEM_CONTENT_TYPE, problemTypeUri, type Problem } from '@pushline/protocol';
import { adapterClients, closeRedis, isCluster, type RedisClient } from '@pushline/registry';
import { listenForUrl } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import { createAdapter, createShardedAdapter } from '@socket.io/redis-adapter';
import { Server, type Namespace, type Socket } from 'socket.io';
import { deviceFrameParser } from './frame-guard.ts';

/** Handshakes held at once before new ones are refused (see `maxPendingHandshakes`). */
export const DEFAULT_MAX_PENDING_HANDSHAKES = 4000;

/** Options of the socket.io server devices connect to. */
export interface SocketServerOptions {
  readonly config: ConnectionServerConfig;
  /** The caller's client (one Redis or a cluster); the server duplicates it for the adapter and owns the duplicates. */
  readonly redis: RedisClient;
  readonly logger: Logger;
  /**
   * Handshakes (engine connection opened, device not yet authenticated) held at once; past it new
   * ones are refused at the HTTP upgrade, before any work, and the device retries with backoff
   * (elsewhere). Bounds the queueing delay of a reconnect storm below the handshake timeout, so
   * the server does not spend its CPU on handshakes the devices have already given up on.
   * Default 4000 (docs/performance.md, "Handshake admission").
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
  /**
   * Pending handshakes one client address (an IPv6 /64 counting as one) may hold; past it new ones
   * get HTTP 400 before the upgrade. 0 turns it off. Default PUSHLINE_MAX_PENDING_PER_ADDRESS.
   */
  readonly maxPendingPerAddress?: number;
  /**
   * A transport that has not asked to join (no socket.io CONNECT) this long after opening is closed.
   * Default PUSHLINE_CONNECT_PACKET_TIMEOUT_MS.
   */
  readonly connectPacketTimeoutMs?: number;
  /** Called for every transport refused or closed before it could authenticate, with why. */
  readonly onRefused?: (reason: 'per_address' | 'no_connect' | 'eio3') => void;
  /** Called when a Redis command the adapter sent without awaiting it failed (counted, not thrown). */
  readonly onAdapterCommandFailed?: (command: string) => void;
}

/**
 * Commands the socket.io Redis adapters send without awaiting (or catching) their promise: the
 * (un)subscribes of both adapters and the classic adapter's PUBLISH. A Redis that times out or a
 * connection that closes rejects them, and an unhandled rejection ends a Node process.
 */
const UNAWAITED_ADAPTER_COMMANDS = [
  'publish',
  'spublish',
  'subscribe',
  'unsubscribe',
  'psubscribe',
  'punsubscribe',
  'ssubscribe',
  'sunsubscribe',
] as const;

/**
 * Makes every unawaited adapter command's failure reach `onFailure` instead of crashing the
 * process, and hands each (s)subscribe's promise to `onSubscribe` (it settles once Redis confirmed
 * the subscription).
 */
function catchUnawaitedCommands(
  client: RedisClient,
  onFailure: (command: string, err: unknown) => void,
  onSubscribe: (confirmed: Promise<unknown>) => void,
): void {
  for (const command of UNAWAITED_ADAPTER_COMMANDS) {
    const send = (client[command] as (...args: unknown[]) => Promise<unknown>).bind(client);
    Object.defineProperty(client, command, {
      configurable: true,
      writable: true,
      value: (...args: unknown[]) => {
        const sent = send(...args);
        sent.catch((err: unknown) => onFailure(command, err));
        if (command === 'subscribe' || command === 'psubscribe' || command === 'ssubscribe')
          onSubscribe(sent);
        return sent;
      },
    });
  }
}

/**
 * Logs a stream of like errors at most once per `everyMs`, with how many were left out: a cluster
 * client reports every failed attempt to reach a node that is failing over (dozens a second).
 */
function throttledWarn(logger: Logger, message: string, everyMs = 5_000): (fields: object) => void {
  let last = 0;
  let suppressed = 0;
  return (fields) => {
    const now = Date.now();
    if (now - last < everyMs) {
      suppressed++;
      return;
    }
    logger.warn({ ...fields, suppressed }, message);
    last = now;
    suppressed = 0;
  };
}

/**
 * socket.io asks the adapter how many servers there are for every acked broadcast and does not
 * catch that promise (BroadcastOperator.emit), so a Redis that timed out would end the process.
 * When Redis cannot say, only this server is counted: the others cannot be reached through Redis
 * anyway, so the broadcast completes with the local acks instead of waiting for its timeout.
 * A function expression, not an arrow: socket.io calls the factory with `new`.
 */
function serverCountOrSelf<A extends { serverCount(): Promise<number> }>(
  factory: (nsp: Namespace) => A,
  onFailure: () => void,
): (nsp: Namespace) => A {
  return function (nsp: Namespace) {
    const adapter = factory(nsp);
    const ask = adapter.serverCount.bind(adapter);
    adapter.serverCount = () =>
      ask().catch(() => {
        onFailure();
        return 1;
      });
    return adapter;
  };
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
  readonly remoteAddress: string;
  close(): void;
}

/** A handshake in flight: when its transport opened, and the client address it counts against. */
interface PendingHandshake {
  readonly openedAt: number;
  readonly address: string;
}

/**
 * The unit of the per-address handshake cap: the IPv4 address (also when written IPv4-mapped), or
 * the /64 prefix of an IPv6 address, since one IPv6 client usually holds a whole /64.
 */
function addressKey(address: string | undefined): string {
  if (!address) return '';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) return mapped[1];
  if (!address.includes(':')) return address;
  const [head = '', tail] = address.toLowerCase().split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined
      ? headGroups
      : [
          ...headGroups,
          ...Array<string>(Math.max(0, 8 - headGroups.length - tailGroups.length)).fill('0'),
          ...tailGroups,
        ];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

/** Request time and head size bounds of the device port (plain HTTP requests and upgrades alike). */
function deviceHttpOptions(config: ConnectionServerConfig) {
  return {
    maxHeaderSize: config.PUSHLINE_MAX_HEADER_BYTES,
    // A client gets the handshake bound to send its request head (and any body), like a handshake.
    headersTimeout: config.PUSHLINE_HANDSHAKE_TIMEOUT_MS,
    requestTimeout: config.PUSHLINE_HANDSHAKE_TIMEOUT_MS,
    // Node checks those two every 30 s by default, which would let a stalled head live 30 s more.
    connectionsCheckingInterval: 1_000,
    keepAliveTimeout: 1_000,
  };
}

/** The body of the device port's 404, in the platform's one problem shape. */
function notFoundProblem(req: IncomingMessage): string {
  const problem: Problem = {
    type: problemTypeUri('not-found'),
    title: 'not found',
    status: 404,
    instance: (req.url ?? '/').split('?')[0] ?? '/',
  };
  return JSON.stringify(problem);
}

/** Everything on the device port that is not socket.io: answered at once, and the connection closed. */
function notFound(req: IncomingMessage, res: ServerResponse): void {
  const body = notFoundProblem(req);
  res.writeHead(404, {
    'content-type': PROBLEM_CONTENT_TYPE,
    'content-length': Buffer.byteLength(body),
    connection: 'close',
  });
  res.end(body);
}

/**
 * An upgrade (WebSocket or other) outside the socket.io path gets the same 404 as a plain request,
 * and the connection is closed once it is written; engine.io would close it after a second without
 * a word (its `destroyUpgrade`), which a client cannot tell from a network failure.
 */
function refuseUpgrade(req: IncomingMessage, socket: Duplex): void {
  const body = notFoundProblem(req);
  socket.on('error', () => {
    // the client went away first: nothing to answer
  });
  socket.end(
    `HTTP/1.1 404 Not Found\r\ncontent-type: ${PROBLEM_CONTENT_TYPE}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    () => socket.destroy(),
  );
}

/** Whether a handshake request asks for an Engine.IO protocol other than 4 (socket.io v2 clients ask for 3). */
function unsupportedEngineProtocol(req: IncomingMessage): boolean {
  const query = (req.url ?? '').split('?')[1] ?? '';
  return new URLSearchParams(query).get('EIO') !== '4';
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
  readonly #options: SocketServerOptions;
  readonly #adapterClients: RedisClient[] = [];
  /**
   * Engine connections not yet authenticated → when they opened and from where, oldest first. One
   * that closes before authenticating is dropped when it is next looked at (#prune), not by a close
   * listener, which would stay on every idle connection (docs/performance.md, "Pending handshakes
   * pruned when looked at").
   */
  readonly #pending = new Map<EngineConnection, PendingHandshake>();
  /**
   * The pending handshakes whose client asked to join (its CONNECT packet was read), in that order.
   * Only these count against `maxPendingHandshakes` and measure how far behind the server is: a
   * transport that never asks is closed after `connectPacketTimeoutMs` and would otherwise fill
   * every slot (a few thousand raw WebSockets did) or, alone, make admission refuse every device.
   */
  readonly #asking = new Map<EngineConnection, number>();
  /** Pending handshakes per client address (addressKey). */
  readonly #perAddress = new Map<string, number>();
  readonly #maxPerAddress: number;
  readonly #connectPacketTimeoutMs: number;
  #sweepTimer: NodeJS.Timeout | undefined;
  #prunedAt = 0;
  #url: string | undefined;

  constructor(options: SocketServerOptions) {
    this.#options = options;
    const { config } = options;
    const maxPending = options.maxPendingHandshakes ?? DEFAULT_MAX_PENDING_HANDSHAKES;
    const maxQueueMs = options.maxHandshakeQueueMs ?? Math.floor(config.PUSHLINE_HANDSHAKE_TIMEOUT_MS / 2);
    this.#maxPerAddress = options.maxPendingPerAddress ?? config.PUSHLINE_MAX_PENDING_PER_ADDRESS;
    this.#connectPacketTimeoutMs =
      options.connectPacketTimeoutMs ?? config.PUSHLINE_CONNECT_PACKET_TIMEOUT_MS;
    this.http = createServer(deviceHttpOptions(config));
    // engine.io hands every request outside its path to the listeners present when it attaches.
    this.http.on('request', notFound);
    this.io = new Server(this.http, {
      transports: config.PUSHLINE_ALLOW_POLLING ? ['polling', 'websocket'] : ['websocket'],
      pingInterval: config.PUSHLINE_PING_INTERVAL_MS,
      pingTimeout: config.PUSHLINE_PING_TIMEOUT_MS,
      // The handshake middleware answers `handshake_timeout` within PUSHLINE_HANDSHAKE_TIMEOUT_MS;
      // this closes, a little later, a client that asked to join and was never answered. One that
      // never asks is closed much earlier (connectPacketTimeoutMs, #sweep).
      connectTimeout: config.PUSHLINE_HANDSHAKE_TIMEOUT_MS + 1_000,
      maxHttpBufferSize: config.PUSHLINE_MAX_FRAME_BYTES,
      perMessageDeflate: false,
      httpCompression: false,
      serveClient: false,
      allowEIO3: false,
      // Upgrades outside the socket.io path are answered below instead (refuseUpgrade).
      destroyUpgrade: false,
      cleanupEmptyChildNamespaces: true,
      parser: deviceFrameParser,
      allowRequest: (req, callback) => {
        // engine.io checks the protocol version only after a WebSocket upgrade, and then writes an
        // HTTP 400 into the open WebSocket; refused here, the client gets a real 400 instead of 101.
        if (req.headers.upgrade !== undefined && unsupportedEngineProtocol(req)) {
          options.onRefused?.('eio3');
          return callback('unsupported protocol version (EIO=4 only)', false);
        }
        const address = addressKey(req.socket.remoteAddress);
        if (this.#maxPerAddress > 0 && (this.#perAddress.get(address) ?? 0) >= this.#maxPerAddress) {
          this.#prune(PRUNE_INTERVAL_MS);
          if ((this.#perAddress.get(address) ?? 0) >= this.#maxPerAddress) {
            options.onRefused?.('per_address');
            return callback('too many pending handshakes from this address', false);
          }
        }
        // At the limit, closed handshakes may still hold slots: look for them (not on every request).
        if (this.#asking.size >= maxPending) this.#prune(PRUNE_INTERVAL_MS);
        const waited = this.#oldestPendingMs();
        if (this.#asking.size < maxPending && (waited === undefined || waited < maxQueueMs)) {
          return callback(null, true);
        }
        options.onBusy?.();
        callback('server busy', false);
      },
    });
    const enginePath = `${this.io.path()}/`;
    this.http.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
      // The same prefix test engine.io applies before it takes an upgrade.
      if (!(req.url ?? '').startsWith(enginePath)) refuseUpgrade(req, socket);
    });
    this.io.use((socket, next) => {
      const pending = this.#pending.get(socket.conn);
      if (pending !== undefined) this.#asking.set(socket.conn, pending.openedAt);
      next();
    });
    this.io.engine.on('connection', (raw: EngineConnection) => {
      const address = addressKey(raw.remoteAddress);
      this.#pending.set(raw, { openedAt: Date.now(), address });
      this.#perAddress.set(address, (this.#perAddress.get(address) ?? 0) + 1);
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

  /** Handshakes in flight whose client asked to join: the ones that hold admission slots. */
  get askingHandshakes(): number {
    this.#prune(0);
    return this.#asking.size;
  }

  /** The device behind `socket` authenticated: its engine connection no longer counts as pending. */
  authenticated(socket: Socket): void {
    this.#drop(socket.conn);
  }

  #drop(raw: EngineConnection): void {
    const pending = this.#pending.get(raw);
    this.#asking.delete(raw);
    if (pending === undefined) return;
    this.#pending.delete(raw);
    const left = (this.#perAddress.get(pending.address) ?? 1) - 1;
    if (left > 0) this.#perAddress.set(pending.address, left);
    else this.#perAddress.delete(pending.address);
  }

  /** Drops pending handshakes whose connection closed, unless it did so less than `minIntervalMs` ago. */
  #prune(minIntervalMs: number): void {
    const now = Date.now();
    if (now - this.#prunedAt < minIntervalMs) return;
    this.#prunedAt = now;
    for (const raw of this.#pending.keys()) {
      if (raw.readyState === 'closed') this.#drop(raw);
    }
  }

  /**
   * Closes the transports that opened `connectPacketTimeoutMs` ago or more and never asked to join.
   * #pending is in opening order, so the walk ends at the first younger one that has not asked.
   */
  #sweep(): void {
    const deadline = Date.now() - this.#connectPacketTimeoutMs;
    for (const [raw, pending] of this.#pending) {
      if (raw.readyState === 'closed') {
        this.#drop(raw);
        continue;
      }
      if (this.#asking.has(raw)) continue;
      if (pending.openedAt > deadline) break;
      this.#drop(raw);
      this.#options.onRefused?.('no_connect');
      raw.close();
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
      this.#drop(raw);
    }
    return undefined;
  }

  /**
   * When the engine connection under a socket opened, the start of its handshake budget. Asked
   * while the handshake is pending; now if it is not (any more).
   */
  openedAt(socket: Socket): number {
    return this.#pending.get(socket.conn)?.openedAt ?? Date.now();
  }

  get url(): string {
    if (!this.#url) throw new Error('socket server not started');
    return this.#url;
  }

  /** Subscribes the adapter and listens; resolves with the device URL. */
  async start(): Promise<string> {
    await this.#attachAdapter();
    const { config } = this.#options;
    this.#sweepTimer = setInterval(
      () => this.#sweep(),
      Math.max(50, Math.min(250, this.#connectPacketTimeoutMs / 4)),
    );
    this.#sweepTimer.unref();
    this.#url = await listenForUrl(this.http, {
      port: config.PUSHLINE_PORT,
      host: config.PUSHLINE_HOST,
      backlog: LISTEN_BACKLOG,
    });
    return this.#url;
  }

  async #attachAdapter(): Promise<void> {
    const { config, redis, logger } = this.#options;
    // Bounded as configured whatever the caller's client is: the publisher like any command client,
    // the subscriber without command or read timeouts (see redisSubscriberOptions). On a reconnect
    // (a Redis restart) ioredis re-subscribes every channel the subscriber held, the adapter's
    // dynamic room channels included, before anything else is sent on it. On a cluster the
    // subscriber keeps one connection per master and re-subscribes each channel on the master
    // that owns it after a failover; SPUBLISH goes to the channel's master, so a room's
    // broadcasts only load its shard.
    const { publisher: pub, subscriber: sub } = adapterClients(redis, config);
    const subscribed: Promise<unknown>[] = [];
    for (const [role, client] of [
      ['pub', pub],
      ['sub', sub],
    ] as const) {
      this.#adapterClients.push(client);
      const warn = throttledWarn(logger, 'socket.io adapter redis error');
      client.on('error', (err: Error) => warn({ err, role }));
      catchUnawaitedCommands(
        client,
        (command, err) => {
          this.#options.onAdapterCommandFailed?.(command);
          logger.debug({ err, role, command }, 'socket.io adapter redis command failed');
        },
        (confirmed) => subscribed.push(confirmed),
      );
    }
    await Promise.all([pub.connect(), sub.connect()]);
    if (isCluster(sub) && config.PUSHLINE_SOCKETIO_ADAPTER !== 'sharded') {
      logger.warn(
        'the classic socket.io adapter on a Redis Cluster sends every broadcast to every node; PUSHLINE_SOCKETIO_ADAPTER=sharded spreads them over the shards',
      );
    }
    const prefix = `${config.PUSHLINE_KEY_PREFIX}socket.io`;
    const countFailed = () => this.#options.onAdapterCommandFailed?.('pubsub_numsub');
    this.io.adapter(
      config.PUSHLINE_SOCKETIO_ADAPTER === 'sharded'
        ? serverCountOrSelf(
            createShardedAdapter(pub, sub, {
              channelPrefix: prefix,
              subscriptionMode: config.PUSHLINE_SOCKETIO_SUBSCRIPTION_MODE,
            }),
            countFailed,
          )
        : serverCountOrSelf(createAdapter(pub, sub, { key: prefix }), countFailed),
    );
    // The adapter subscribed to its channels while it was built; once Redis confirmed each one, no
    // cross-server broadcast is missed.
    await Promise.all([pub.ping(), ...subscribed]);
  }

  /** Closes every socket, the HTTP server, the adapter and its Redis clients. */
  async close(): Promise<void> {
    clearInterval(this.#sweepTimer);
    // io.close() also closes the underlying HTTP server (its error when listen never happened is
    // fine here). The adapter's unsubscribes are not awaited by it, so a hung Redis does not hold it.
    await this.io.close();
    await Promise.allSettled(this.#adapterClients.map((c) => closeRedis(c)));
  }
}
