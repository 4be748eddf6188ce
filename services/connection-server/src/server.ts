import { readFileSync } from 'node:fs';
import { ConfigError, topicNames, type ConnectionServerConfig } from '@pushline/config';
import {
  ChannelDeliveryTransport,
  ChannelServer,
  DeliveryTransportError,
  DeviceLocator,
  MessageRouter,
  type DeliveryTransport,
} from '@pushline/delivery';
import type { KafkaClient, Producer } from '@pushline/kafka';
import type { OfflineInbox } from '@pushline/offline-store';
import {
  DeviceEvents,
  type BroadcastRequest,
  type BroadcastResult,
  type DeliverRequest,
  type DeliverResult,
  type DeviceTokenClaims,
  type DisconnectReason,
} from '@pushline/protocol';
import {
  RegistryWatch,
  type DeviceRecord,
  type DeviceRegistry,
  type RegistryRecovery,
  type RedisClient,
} from '@pushline/registry';
import { closeOnce, OpsServer, runCleanup } from '@pushline/runtime';
import { SpanKind, type Logger, type Registry, type Tracer } from '@pushline/telemetry';
import type { Socket } from 'socket.io';
import { createTokenVerifier } from './auth.ts';
import { TopicBroadcaster } from './broadcast.ts';
import { ConnectionEventPublisher } from './connection-events.ts';
import { DeviceConnection } from './connection.ts';
import { DeviceToDevice } from './d2d.ts';
import { LocalDelivery } from './delivery.ts';
import { handshakeMiddleware } from './handshake.ts';
import { Liveness } from './liveness.ts';
import { LoadReporter } from './load-report.ts';
import { LocalDevices } from './local-devices.ts';
import { countedRegistryOp, createMetrics, type ConnectionServerMetrics } from './metrics.ts';
import { RegistryRestorer } from './registry-restore.ts';
import { GracefulCloser } from './shutdown.ts';
import { attachConnection, sharedSocketListener } from './shared-listeners.ts';
import { SocketServer } from './socket-server.ts';
import { DeviceRequests } from './requests.ts';
import { TokenLifecycle } from './token-lifecycle.ts';
import { defaultTopicAuthorizer, Subscriptions, type TopicAuthorizer } from './subscriptions.ts';

export interface ConnectionServerDeps {
  /** Parsed with `connectionServerEnv` from @pushline/config. */
  readonly config: ConnectionServerConfig;
  /** The id this server goes by in the registry, logs, traces and metrics (`connectionServerId(config)`). */
  readonly serverId: string;
  /** Owned by the caller; the server duplicates it for the socket.io adapter and owns those. */
  readonly redis: RedisClient;
  /** Also restores this server's entries when Redis loses them. */
  readonly registry: DeviceRegistry & RegistryRecovery;
  readonly kafka: KafkaClient;
  readonly logger: Logger;
  readonly metrics: Registry;
  readonly tracer: Tracer;
  /** Store-and-forward; drained to a device right after it connects, before live messages. */
  readonly inbox?: OfflineInbox;
  /** How device-to-device messages and replaced notices reach other servers. Default: an owned ChannelDeliveryTransport. */
  readonly transport?: DeliveryTransport;
  /** Who may subscribe to what. Default: the `topics` claim and the device's own `user:<uid>` topics. */
  readonly authorizeTopic?: TopicAuthorizer;
}

export interface ConnectionServer {
  start(): Promise<void>;
  /** Graceful: refuse handshakes, hint and close devices, deregister, flush events. Idempotent. */
  close(): Promise<void>;
  readonly serverId: string;
  /** Where devices connect (socket.io, default path /socket.io). */
  readonly deviceUrl: string;
  /** Base URL of the internal port (the internal channel, health, metrics). */
  readonly internalUrl: string;
  readonly connectionCount: number;
  /** Whether this server's router trusts the registry's silence (see `RegistryWatch`). */
  readonly registryWatch: Pick<RegistryWatch, 'complete' | 'knownServers'>;
  /** Handshakes in flight: connections opened whose device has not authenticated yet. */
  readonly pendingHandshakes: number;
  /** Started and not draining: what /readyz answers, and what the load-balancer agent reports. */
  readonly ready: boolean;
  deliverLocal(req: DeliverRequest): Promise<DeliverResult>;
  /** Sends to a topic's subscribers on every server (what a channel `broadcast` call does). */
  broadcast(req: BroadcastRequest): Promise<BroadcastResult>;
}

export function createConnectionServer(deps: ConnectionServerDeps): ConnectionServer {
  return new PushlineConnectionServer(deps);
}

/** Checks the relations between variables that one schema field cannot express. */
function validateConnectionServerConfig(config: ConnectionServerConfig): void {
  const issues: { variable: string; message: string }[] = [];
  if (config.PUSHLINE_REGISTRY_REFRESH_S >= config.PUSHLINE_REGISTRY_TTL_S) {
    issues.push({
      variable: 'PUSHLINE_REGISTRY_REFRESH_S',
      message: 'must be below PUSHLINE_REGISTRY_TTL_S',
    });
  }
  if (config.PUSHLINE_LIFETIME_JITTER_S >= config.PUSHLINE_MAX_CONNECTION_LIFETIME_S) {
    issues.push({
      variable: 'PUSHLINE_LIFETIME_JITTER_S',
      message: 'must be below PUSHLINE_MAX_CONNECTION_LIFETIME_S',
    });
  }
  if (
    (config.PUSHLINE_INTERNAL_TLS_CERT === undefined) !==
    (config.PUSHLINE_INTERNAL_TLS_KEY === undefined)
  ) {
    issues.push({
      variable:
        config.PUSHLINE_INTERNAL_TLS_CERT === undefined
          ? 'PUSHLINE_INTERNAL_TLS_CERT'
          : 'PUSHLINE_INTERNAL_TLS_KEY',
      message: 'PUSHLINE_INTERNAL_TLS_CERT and PUSHLINE_INTERNAL_TLS_KEY must be set together',
    });
  }
  if (config.PUSHLINE_DEVICE_REQUEST_BURST < config.PUSHLINE_MAX_TOPICS_PER_DEVICE) {
    issues.push({
      variable: 'PUSHLINE_DEVICE_REQUEST_BURST',
      message:
        'must be at least PUSHLINE_MAX_TOPICS_PER_DEVICE, so a reconnecting device can subscribe again at once',
    });
  }
  if (issues.length > 0) throw new ConfigError(issues);
}

/** What stays of a socket's handshake auth once its token is verified. */
const VERIFIED_AUTH = Object.freeze({});

/** SocketIO's disconnect reasons → the platform's (ConnectionEvent.reason). */
function disconnectReason(reason: string): DisconnectReason {
  switch (reason) {
    case 'client namespace disconnect':
      return 'client_disconnect';
    case 'transport close':
      return 'transport_close';
    case 'transport error':
    case 'parse error':
      return 'transport_error';
    case 'ping timeout':
      return 'ping_timeout';
    case 'server shutting down':
    case 'forced server close':
      return 'server_shutdown';
    case 'server namespace disconnect':
      return 'server_kicked';
    default:
      return 'unknown';
  }
}

class PushlineConnectionServer implements ConnectionServer {
  readonly serverId: string;
  readonly close: () => Promise<void>;
  readonly #deps: ConnectionServerDeps;
  readonly #config: ConnectionServerConfig;
  readonly #log: Logger;
  readonly #metrics: ConnectionServerMetrics;
  readonly #devices = new LocalDevices();
  readonly #claims = new WeakMap<Socket, DeviceTokenClaims>();
  readonly #socketServer: SocketServer;
  readonly #ops: OpsServer;
  readonly #channel: ChannelServer;
  readonly #producer: Producer;
  readonly #events: ConnectionEventPublisher;
  readonly #delivery: LocalDelivery;
  readonly #broadcaster: TopicBroadcaster;
  readonly #subscriptions: Subscriptions;
  readonly #closer: GracefulCloser;
  readonly #liveness: Liveness;
  readonly #restorer: RegistryRestorer;
  /** Whether the other servers have written their entries back, asked before a d2d `not_connected`. */
  readonly #registryWatch: RegistryWatch;
  readonly #loadReporter: LoadReporter;
  readonly #transport: DeliveryTransport;
  readonly #ownsTransport: boolean;
  readonly #locator: DeviceLocator;
  readonly #d2d: DeviceToDevice;
  readonly #pending = new Set<Promise<void>>();
  readonly #onSocketDisconnect = sharedSocketListener((conn, reason: string) =>
    this.#onDisconnect(conn, reason),
  );
  readonly #requests: DeviceRequests;
  readonly #tokens: TokenLifecycle;
  // One any-listener per socket, not one per request event; it also answers events no handler knows.
  readonly #onSocketEvent = sharedSocketListener((conn, event: unknown, ...args: unknown[]) =>
    this.#requests.handle(conn, event, args),
  );
  #emptyWaiters: (() => void)[] = [];
  #deviceUrl: string | undefined;
  #internalUrl: string | undefined;
  #started = false;
  #draining = false;

  constructor(deps: ConnectionServerDeps) {
    this.#deps = deps;
    const config = (this.#config = deps.config);
    this.serverId = deps.serverId;
    this.#log = deps.logger.child({ component: 'connection-server', serverId: this.serverId });
    const metrics = (this.#metrics = createMetrics(deps.metrics, () => this.#devices.size));
    const { tracer } = deps;
    const logger = this.#log;

    this.#socketServer = new SocketServer({
      config,
      redis: deps.redis,
      logger,
      onBusy: () => metrics.handshakesBusy.inc(),
      onRefused: (reason) => metrics.handshakesRefused.inc({ reason }),
      onAdapterCommandFailed: () => metrics.loopFailures.inc({ loop: 'socketio_adapter' }),
    });
    this.#delivery = new LocalDelivery({
      devices: this.#devices,
      metrics,
      tracer,
      logger,
      dedupeWindow: config.PUSHLINE_DEDUPE_WINDOW,
      d2dPolicy: config.PUSHLINE_D2D_POLICY,
    });
    this.#broadcaster = new TopicBroadcaster({ io: this.#socketServer.io, tracer, metrics, logger });
    this.#subscriptions = new Subscriptions({
      authorize: deps.authorizeTopic ?? defaultTopicAuthorizer,
      maxTopics: config.PUSHLINE_MAX_TOPICS_PER_DEVICE,
      metrics,
    });
    this.#closer = new GracefulCloser(metrics);
    this.#producer = deps.kafka.producer();
    this.#events = new ConnectionEventPublisher({
      producer: this.#producer,
      topic: topicNames(config.PUSHLINE_TOPIC_PREFIX).connectionEvents,
      serverId: this.serverId,
      logger,
      metrics,
    });
    this.#ops = new OpsServer({
      host: config.PUSHLINE_INTERNAL_HOST,
      port: config.PUSHLINE_INTERNAL_PORT,
      metrics: deps.metrics,
      ready: async () => ({
        ok: this.ready,
        detail: { serverId: this.serverId, connections: this.#devices.size, draining: this.#draining },
      }),
      tls:
        config.PUSHLINE_INTERNAL_TLS_CERT !== undefined && config.PUSHLINE_INTERNAL_TLS_KEY !== undefined
          ? {
              cert: readFileSync(config.PUSHLINE_INTERNAL_TLS_CERT),
              key: readFileSync(config.PUSHLINE_INTERNAL_TLS_KEY),
            }
          : undefined,
    });
    // Every internal call (deliveries, broadcasts, device-to-device, replaced notices) arrives here.
    this.#channel = new ChannelServer({
      server: this.#ops.server,
      internalToken: config.PUSHLINE_INTERNAL_TOKEN,
      handlers: {
        deliver: (req) => this.#delivery.deliver(req, SpanKind.SERVER),
        broadcast: (req) => this.#broadcaster.broadcast(req, SpanKind.SERVER),
        replaced: (notice) => this.#closeReplaced(notice.deviceId, notice.connectionId),
      },
      maxJsonDepth: config.PUSHLINE_MAX_JSON_DEPTH,
      metrics: deps.metrics,
      logger,
    });
    this.#liveness = new Liveness({
      devices: this.#devices,
      registry: deps.registry,
      metrics,
      logger,
      serverId: this.serverId,
      ttlSeconds: config.PUSHLINE_REGISTRY_TTL_S,
      refreshMs: config.PUSHLINE_REGISTRY_REFRESH_S * 1000,
      closeGraceMs: config.PUSHLINE_CLOSE_GRACE_MS,
      idleTimeoutMs: config.PUSHLINE_IDLE_TIMEOUT_S * 1000,
      recycle: (conn, why) => this.#recycle(conn, why),
    });
    this.#restorer = new RegistryRestorer({
      devices: this.#devices,
      registry: deps.registry,
      redis: deps.redis,
      metrics,
      logger,
      serverId: this.serverId,
      ttlSeconds: config.PUSHLINE_REGISTRY_TTL_S,
      ratePerS: config.PUSHLINE_REGISTRY_RESTORE_RATE_PER_S,
      recordOf: (conn) => this.#recordOf(conn),
      // Redis lost the load report too (or it expired during the outage): routers see this
      // server again without waiting for the report loop's next turn.
      onRestored: () => this.#reportLoadNow('after a registry restore'),
      onReconnected: () => this.#reportLoadNow('after Redis reconnected'),
    });
    this.#loadReporter = new LoadReporter({
      registry: deps.registry,
      metrics,
      logger,
      intervalMs: config.PUSHLINE_LOAD_REPORT_MS,
      serverId: this.serverId,
      urls: () => ({
        serverUrl: this.internalUrl,
        deviceUrl: config.PUSHLINE_PUBLIC_URL ?? this.deviceUrl,
        directUrl: directDeviceUrl(this.internalUrl, this.deviceUrl),
      }),
      connections: () => this.#devices.size,
      pendingHandshakes: () => this.#socketServer.pendingHandshakes,
      draining: () => this.#draining,
    });
    this.#ownsTransport = deps.transport === undefined;
    // Device-to-device sends read in the same turn of the event loop (many sockets' frames read
    // together, more of them the busier the server) go to each server as one frame.
    this.#transport =
      deps.transport ??
      new ChannelDeliveryTransport({
        internalToken: config.PUSHLINE_INTERNAL_TOKEN,
        tlsCa:
          config.PUSHLINE_INTERNAL_TLS_CA === undefined
            ? undefined
            : readFileSync(config.PUSHLINE_INTERNAL_TLS_CA),
        logger,
        metrics: deps.metrics,
      });
    this.#locator = new DeviceLocator({ registry: deps.registry, tracer });
    this.#registryWatch = new RegistryWatch({
      registry: deps.registry,
      redis: deps.redis,
      watcherId: `connection-server:${this.serverId}`,
      logger,
      serverGoneAfterMs: 3 * config.PUSHLINE_LOAD_REPORT_MS,
      metrics: deps.metrics,
    });
    const router = new MessageRouter({
      completeness: this.#registryWatch,
      locator: this.#locator,
      registry: deps.registry,
      transport: this.#transport,
      local: { serverId: this.serverId, deliver: (req) => this.deliverLocal(req) },
      tracer,
      logger,
    });
    this.#d2d = new DeviceToDevice({
      policy: config.PUSHLINE_D2D_POLICY,
      router,
      locator: this.#locator,
      ratePerS: config.PUSHLINE_D2D_RATE_PER_S,
      burst: config.PUSHLINE_D2D_BURST,
      maxPayloadBytes: config.PUSHLINE_MAX_PAYLOAD_BYTES,
      defaultTimeoutMs: config.PUSHLINE_DELIVERY_TIMEOUT_MS,
      metrics,
      tracer,
      logger,
    });
    this.#tokens = new TokenLifecycle({
      devices: this.#devices,
      leadMs: config.PUSHLINE_TOKEN_REFRESH_LEAD_S * 1000,
      toleranceMs: config.PUSHLINE_DEVICE_JWT_CLOCK_TOLERANCE_S * 1000,
      expire: (conn) =>
        this.#closer.closeAfterHint(conn, { reason: 'token_expired', afterMs: 0 }, 'token_expired', 0),
      prune: (conn) => this.#subscriptions.prune(conn),
      metrics,
      logger,
    });
    this.#requests = new DeviceRequests({
      handlers: {
        [DeviceEvents.subscribe]: (conn, body) => this.#subscriptions.subscribe(conn, body),
        [DeviceEvents.unsubscribe]: (conn, body) => this.#subscriptions.unsubscribe(conn, body),
        [DeviceEvents.send]: (conn, body) => this.#d2d.send(conn, body),
        [DeviceEvents.refreshToken]: (conn, body) => this.#tokens.refresh(conn, body),
      },
      maxJsonDepth: config.PUSHLINE_MAX_JSON_DEPTH,
      ratePerS: config.PUSHLINE_DEVICE_REQUEST_RATE_PER_S,
      burst: config.PUSHLINE_DEVICE_REQUEST_BURST,
      metrics,
      logger,
    });
    this.close = closeOnce(() => this.#close());
  }

  get deviceUrl(): string {
    if (!this.#deviceUrl) throw new Error('connection server not started');
    return this.#deviceUrl;
  }

  get internalUrl(): string {
    if (!this.#internalUrl) throw new Error('connection server not started');
    return this.#internalUrl;
  }

  /** Whether this server's router trusts the registry's silence (see `RegistryWatch`). */
  get registryWatch(): Pick<RegistryWatch, 'complete' | 'knownServers'> {
    return this.#registryWatch;
  }

  get connectionCount(): number {
    return this.#devices.size;
  }

  get pendingHandshakes(): number {
    return this.#socketServer.pendingHandshakes;
  }

  get ready(): boolean {
    return this.#started && !this.#draining;
  }

  deliverLocal(req: DeliverRequest): Promise<DeliverResult> {
    return this.#delivery.deliver(req, SpanKind.INTERNAL);
  }

  broadcast(req: BroadcastRequest): Promise<BroadcastResult> {
    return this.#broadcaster.broadcast(req, SpanKind.INTERNAL);
  }

  async start(): Promise<void> {
    const config = this.#config;
    validateConnectionServerConfig(config);
    const verifier = await createTokenVerifier(config);
    const io = this.#socketServer.io;
    io.use(
      handshakeMiddleware({
        verifier,
        timeoutMs: config.PUSHLINE_HANDSHAKE_TIMEOUT_MS,
        isDraining: () => this.#draining,
        openedAt: (socket) => this.#socketServer.openedAt(socket),
        claims: this.#claims,
        metrics: this.#metrics,
        logger: this.#log,
      }),
    );
    io.on('connection', (socket) => this.#onConnection(socket));
    this.#tokens.start(verifier);

    // Entries left by a previous life of this server id (kill -9) must go before new ones appear.
    const cleared = await countedRegistryOp(this.#metrics, 'clear_server', () =>
      this.#deps.registry.clearServer(this.serverId),
    );
    if (cleared > 0) this.#log.warn({ cleared }, 'cleared stale registry entries of a previous run');
    await this.#restorer.start();
    await this.#registryWatch.start();
    await this.#producer.start();
    this.#channel.start();
    await this.#ops.start();
    this.#internalUrl = config.PUSHLINE_INTERNAL_URL ?? this.#ops.url;
    this.#deviceUrl = await this.#socketServer.start();
    this.#liveness.start();
    await this.#loadReporter.start();
    this.#started = true;
    this.#log.info(
      {
        deviceUrl: this.#deviceUrl,
        internalUrl: this.#internalUrl,
        adapter: config.PUSHLINE_SOCKETIO_ADAPTER,
      },
      'connection server started',
    );
  }

  #lifetimeMs(): number {
    const c = this.#config;
    const jitter = Math.floor(Math.random() * (c.PUSHLINE_LIFETIME_JITTER_S * 1000 + 1));
    return Math.max(1_000, c.PUSHLINE_MAX_CONNECTION_LIFETIME_S * 1000 - jitter);
  }

  #onConnection(socket: Socket): void {
    this.#socketServer.authenticated(socket);
    const claims = this.#claims.get(socket);
    if (!claims) {
      socket.disconnect(true);
      return;
    }
    this.#claims.delete(socket);
    // Verified and its claims kept: the token is not needed again, and a bearer token (a few
    // hundred bytes) should not live as long as the connection.
    socket.handshake.auth = VERIFIED_AUTH;
    const conn = new DeviceConnection({ socket, claims, lifetimeMs: this.#lifetimeMs() });
    attachConnection(socket, conn);
    const previous = this.#devices.add(conn);
    this.#metrics.connects.inc();
    socket.on('disconnect', this.#onSocketDisconnect);
    socket.onAny(this.#onSocketEvent);
    if (previous) {
      // Newest wins: the older connection of the same device is told why and closed now.
      this.#closer.closeAfterHint(previous, { reason: 'replaced', afterMs: 0 }, 'replaced', 0);
    }
    this.#events.connected(conn);
    this.#locator.invalidate(conn.deviceId);
    const registered = this.#register(conn);
    conn.trackRegistration(registered);
    const inbox = this.#deps.inbox;
    if (inbox) {
      const timeoutMs = this.#config.PUSHLINE_DELIVERY_TIMEOUT_MS;
      conn.holdDeliveriesUntil(
        registered
          .then(() =>
            conn.closed
              ? undefined
              : inbox.drain(conn.deviceId, (m) => this.#delivery.deliverStored(conn, m, timeoutMs)),
          )
          .catch((err: unknown) => {
            this.#metrics.loopFailures.inc({ loop: 'inbox_drain' });
            this.#log.warn({ err, deviceId: conn.deviceId }, 'draining the offline inbox failed');
          }),
      );
    }
    if (this.#draining) {
      // Authenticated just before the drain began: send it on like the others.
      this.#closer.closeAfterHint(
        conn,
        {
          reason: 'server_shutdown',
          afterMs: Math.floor(Math.random() * (this.#config.PUSHLINE_DRAIN_WINDOW_MS + 1)),
        },
        'server_shutdown',
        0,
      );
    }
  }

  /** The registry entry of a connection held here. */
  #recordOf(conn: DeviceConnection): DeviceRecord {
    return {
      deviceId: conn.deviceId,
      userId: conn.userId,
      tenantId: conn.tenantId,
      serverId: this.serverId,
      serverUrl: this.internalUrl,
      connectionId: conn.connectionId,
      connectedAt: conn.connectedAt,
      lastSeen: conn.connectedAt,
    };
  }

  /** Writes the connection's registry entry; never rejects (a failure closes the connection). */
  async #register(conn: DeviceConnection): Promise<void> {
    const ttl = this.#config.PUSHLINE_REGISTRY_TTL_S;
    const writtenAt = Date.now();
    try {
      const previous = await countedRegistryOp(this.#metrics, 'register', () =>
        this.#deps.registry.register(this.#recordOf(conn), ttl),
      );
      conn.registryExpiresAt = writtenAt + ttl * 1000;
      if (previous && previous.serverId !== this.serverId && previous.connectionId !== conn.connectionId) {
        this.#notifyReplaced(previous.serverUrl, conn.deviceId, previous.connectionId);
      }
    } catch (err) {
      // A device nobody can find is worse than a reconnect: close it so it retries (elsewhere).
      this.#log.error({ err, deviceId: conn.deviceId }, 'registering a device failed; closing it');
      conn.disconnect('server_kicked');
    }
  }

  /** Writes the load report now; a failure is counted and left to the report loop's retries. */
  #reportLoadNow(when: string): void {
    this.#loadReporter.report().catch((err: unknown) => {
      this.#metrics.loopFailures.inc({ loop: 'load_report' });
      this.#log.warn({ err }, `load report ${when} failed; the loop retries`);
    });
  }

  /** Closes this server's connection of the device if it is still `connectionId`. */
  #closeReplaced(deviceId: string, connectionId: string): boolean {
    const conn = this.#devices.get(deviceId);
    if (!conn || conn.connectionId !== connectionId) return false;
    this.#closer.closeAfterHint(conn, { reason: 'replaced', afterMs: 0 }, 'replaced', 0);
    return true;
  }

  /**
   * The device moved here while its old connection on another server may still be open: tell that
   * server to close it, over the channel. Best effort; if it fails the old connection ends by ping
   * timeout and its compare-and-delete leaves this entry alone. After a crash every device of the
   * dead server lands here; the channel refuses the calls at once while that server's reconnect
   * backoff runs, so a dead server costs no connect attempt per device.
   */
  #notifyReplaced(serverUrl: string, deviceId: string, connectionId: string): void {
    this.#transport.replaced(serverUrl, { deviceId, connectionId }).catch((err: unknown) => {
      this.#metrics.loopFailures.inc({ loop: 'replaced_notice' });
      const failure = err instanceof DeliveryTransportError ? err.failure : undefined;
      this.#log.debug(
        { err, failure, deviceId, serverUrl },
        'could not tell the previous server about a replaced connection',
      );
    });
  }

  #onDisconnect(conn: DeviceConnection, socketReason: string): void {
    conn.markClosed();
    this.#devices.remove(conn);
    const reason = conn.closeReason ?? disconnectReason(socketReason);
    this.#metrics.disconnects.inc({ reason });
    this.#events.disconnected(conn, reason);
    this.#locator.invalidate(conn.deviceId, conn.connectionId);
    // After the registration settled, so a slow register cannot land after its own unregister.
    const done: Promise<void> = conn
      .afterRegistration()
      .then(() =>
        countedRegistryOp(this.#metrics, 'unregister', () =>
          this.#deps.registry.unregister(conn.deviceId, conn.connectionId),
        ),
      )
      .then(
        () => undefined,
        (err: unknown) =>
          this.#log.warn(
            { err, deviceId: conn.deviceId },
            'unregistering a device failed; its entry expires by TTL',
          ),
      )
      .finally(() => this.#pending.delete(done));
    this.#pending.add(done);
    if (this.#devices.size === 0) {
      const waiters = this.#emptyWaiters;
      this.#emptyWaiters = [];
      for (const w of waiters) w();
    }
  }

  #recycle(conn: DeviceConnection, why: 'lifetime_expired' | 'idle_timeout'): void {
    if (why === 'idle_timeout') {
      this.#closer.closeAfterHint(conn, { reason: 'idle', afterMs: 0 }, 'idle_timeout', 0);
      return;
    }
    // Lifetimes are already jittered; the hint spreads the reconnects within the grace period.
    const grace = this.#config.PUSHLINE_CLOSE_GRACE_MS;
    this.#closer.closeAfterHint(
      conn,
      { reason: 'lifetime_expired', afterMs: Math.floor(Math.random() * (grace + 1)) },
      'lifetime_expired',
      grace,
    );
  }

  /** Resolves when no device is connected, or after `ms`. */
  #whenEmpty(ms: number): Promise<void> {
    if (this.#devices.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#emptyWaiters.push(done);
    });
  }

  async #close(): Promise<void> {
    this.#draining = true;
    const config = this.#config;
    const wasStarted = this.#started;
    this.#log.info({ connections: this.#devices.size }, 'connection server draining');
    await runCleanup([
      {
        name: 'report draining',
        run: async () => {
          if (wasStarted) await this.#loadReporter.report();
        },
      },
      {
        name: 'drain devices',
        // The waits below are bounded by the grace period plus 1.5 s; the rest is margin.
        timeoutMs: config.PUSHLINE_CLOSE_GRACE_MS + 5_000,
        run: async () => {
          const hinted = this.#closer.drain(
            this.#devices.values(),
            config.PUSHLINE_DRAIN_WINDOW_MS,
            config.PUSHLINE_CLOSE_GRACE_MS,
          );
          this.#log.info({ hinted }, 'reconnect hints sent');
          // Devices may leave on their own; the grace period (plus a margin) bounds the wait.
          await this.#whenEmpty(config.PUSHLINE_CLOSE_GRACE_MS + 500);
          this.#closer.closeAll(this.#devices.values(), 'server_shutdown');
          await this.#whenEmpty(1_000);
        },
      },
      // Before the entries are cleared, so a restore cannot write them back afterwards.
      { name: 'registry restore', run: () => this.#restorer.close() },
      { name: 'registry watch', run: () => this.#registryWatch.close() },
      { name: 'deregister devices', run: () => Promise.allSettled([...this.#pending]).then(() => undefined) },
      {
        name: 'clear server entries',
        run: async () => {
          await countedRegistryOp(this.#metrics, 'clear_server', () =>
            this.#deps.registry.clearServer(this.serverId),
          );
        },
      },
      { name: 'liveness', run: () => this.#liveness.close() },
      { name: 'token expiry', run: () => this.#tokens.close() },
      { name: 'load report', run: () => this.#loadReporter.close() },
      { name: 'socket server', run: () => this.#socketServer.close() },
      { name: 'connection events', run: () => this.#events.close() },
      { name: 'kafka producer', run: () => this.#producer.close() },
      {
        name: 'delivery transport',
        run: async () => {
          if (this.#ownsTransport) await this.#transport.close();
        },
      },
      { name: 'internal channel', run: () => this.#channel.close() },
      { name: 'internal server', run: () => this.#ops.close() },
      { name: 'timers', run: () => this.#closer.clear() },
    ]);
    this.#started = false;
    this.#log.info('connection server closed');
  }
}

/**
 * The device port as other hosts reach this server itself: the host of its internal URL (which a
 * multi-host deployment sets to the pod's or host's address, PUSHLINE_INTERNAL_URL) with the
 * scheme and port the device port listens on. The listening URL alone says 127.0.0.1 for a
 * wildcard bind, which only works on the same host.
 */
export function directDeviceUrl(internalUrl: string, listeningUrl: string): string {
  const direct = new URL(listeningUrl);
  direct.hostname = new URL(internalUrl).hostname;
  return direct.origin;
}
