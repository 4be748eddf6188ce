import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Express } from 'express';
import { topicNames, type PushApiConfig } from '@pushline/config';
import type { Admin, KafkaClient, Producer } from '@pushline/kafka';
import type { DeviceRegistry, RedisClient, RegistryCompleteness } from '@pushline/registry';
import { OpsServer, closeOnce, listenForUrl, runCleanup } from '@pushline/runtime';
import type { Logger, Registry, Tracer } from '@pushline/telemetry';
import { createApp } from './app.ts';
import type { ApiContext } from './context.ts';
import { IdempotencyStore } from './idempotency.ts';
import { ApiMetrics } from './metrics.ts';
import type { OfflineMessageStore, PushRouter } from './ports.ts';
import { cachedReadiness, probeReadiness } from './routes/health.ts';
import type { RouteSpec } from './routing.ts';
import { buildSchemas } from './schemas.ts';

export interface PushApiDeps {
  /** Parsed with `pushApiEnv` from @pushline/config. */
  readonly config: PushApiConfig;
  /** ioredis client owned by the caller: idempotency keys and the readiness PING. */
  readonly redis: RedisClient;
  readonly registry: DeviceRegistry;
  /**
   * Asked before presence answers from the registry's silence (the router's own): while Redis's
   * lost entries are written back, a device not found is a 503, not `online: false`.
   */
  readonly completeness?: RegistryCompleteness | undefined;
  /** Direct push routing (`MessageRouter` from @pushline/delivery). Its transport is the caller's to close. */
  readonly router: PushRouter;
  /** The API creates its own producer and admin client from it, and closes them. The topics must exist. */
  readonly kafka: KafkaClient;
  /** Store-and-forward for direct pushes with ttlSeconds; without it, ttlSeconds is ignored. */
  readonly offlineStore?: OfflineMessageStore | undefined;
  readonly logger: Logger;
  /** The instance's own prom-client registry, served at /metrics on the ops port. */
  readonly metrics: Registry;
  readonly tracer: Tracer;
}

export interface PushApi {
  /** Starts the ops port, connects the producer, then listens. */
  start(): Promise<void>;
  /** Stops accepting, lets in-flight requests finish (bounded), then closes the producer. Idempotent. */
  close(): Promise<void>;
  /** Base URL, e.g. http://127.0.0.1:8080 (after start). */
  readonly url: string;
  /** Base URL of the ops port (/healthz, /readyz, /metrics), e.g. http://127.0.0.1:8081 (after start). */
  readonly opsUrl: string;
  readonly app: Express;
  /** The documented /v1 operations. */
  readonly routes: readonly RouteSpec[];
}

/** How long a readiness answer is reused: the dependencies see one probe a second at most. */
const READINESS_CACHE_MS = 1000;

export function createPushApi(deps: PushApiDeps): PushApi {
  const { config, logger } = deps;
  const log = logger.child({ component: 'push-api' });
  const topics = topicNames(config.PUSHLINE_TOPIC_PREFIX);
  const metrics = new ApiMetrics(deps.metrics);
  // Connected in start(); handlers only run after that.
  const producer: Producer = deps.kafka.producer();
  let admin: Admin | undefined;
  let draining = false;
  let url: string | undefined;

  const ctx: ApiContext = {
    config,
    schemas: buildSchemas({
      maxBatch: config.PUSHLINE_MAX_BATCH,
      maxPayloadBytes: config.PUSHLINE_MAX_PAYLOAD_BYTES,
      defaultTimeoutMs: config.PUSHLINE_DELIVERY_TIMEOUT_MS,
    }),
    topics,
    registry: deps.registry,
    completeness: deps.completeness,
    router: deps.router,
    producer,
    offlineStore: deps.offlineStore,
    idempotency: new IdempotencyStore({
      redis: deps.redis,
      keyPrefix: config.PUSHLINE_KEY_PREFIX,
      ttlSeconds: config.PUSHLINE_API_IDEMPOTENCY_TTL_S,
      // Longer than any request may run, shorter than a client's patience after a crash.
      pendingTtlMs: config.PUSHLINE_API_DRAIN_TIMEOUT_MS + 60_000,
    }),
    metrics,
    tracer: deps.tracer,
    logger: log,
  };

  const { app, routes } = createApp({ ctx });
  const readiness = cachedReadiness(
    () =>
      probeReadiness({
        admin: () => admin,
        redis: deps.redis,
        pushRequestsTopic: topics.pushRequests,
        timeoutMs: config.PUSHLINE_API_READY_TIMEOUT_MS,
        draining: () => draining,
        logger: log,
      }),
    READINESS_CACHE_MS,
  );
  // Off the public port: no key is needed there, so it must not be reachable from outside.
  const ops = new OpsServer({
    host: config.PUSHLINE_API_OPS_HOST,
    port: config.PUSHLINE_API_OPS_PORT,
    metrics: deps.metrics,
    ready: async () => {
      const { checks } = await readiness();
      // Draining is read now, not from the cached probe: it must show at once.
      return {
        ok: checks.kafka.ok && checks.redis.ok && !draining,
        detail: { draining, checks },
      };
    },
  });

  const inFlight = new Set<ServerResponse>();
  // While draining, answers carry `connection: close` so keep-alive clients reconnect elsewhere.
  const closeAfterResponse = (res: ServerResponse) => {
    if (!res.headersSent) res.setHeader('connection', 'close');
  };
  const server: Server = createServer((req, res) => {
    inFlight.add(res);
    if (draining) closeAfterResponse(res);
    res.once('close', () => {
      inFlight.delete(res);
      if (draining) server.closeIdleConnections();
    });
    app(req, res);
  });
  // Longer than typical load-balancer idle timeouts, so the balancer closes first.
  server.keepAliveTimeout = 65_000;

  const stopHttp = async (): Promise<void> => {
    if (!server.listening) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const timer = setTimeout(() => {
      log.warn({ inFlight: inFlight.size }, 'drain timeout; closing the remaining connections');
      server.closeAllConnections();
    }, config.PUSHLINE_API_DRAIN_TIMEOUT_MS);
    try {
      await closed;
    } finally {
      clearTimeout(timer);
    }
  };

  const close = closeOnce(async () => {
    draining = true;
    for (const res of inFlight) closeAfterResponse(res);
    log.info({ inFlight: inFlight.size }, 'push-api closing');
    await runCleanup([
      // The drain has its own bound; the margin lets it close the connections left at its end.
      { name: 'http server', run: stopHttp, timeoutMs: config.PUSHLINE_API_DRAIN_TIMEOUT_MS + 2_000 },
      { name: 'kafka producer', run: () => producer.close() },
      { name: 'kafka admin', run: () => admin?.close() },
      { name: 'ops server', run: () => ops.close() },
    ]);
  });

  return {
    app,
    routes: routes.specs,
    get url() {
      if (!url) throw new Error('push-api not started');
      return url;
    },
    get opsUrl() {
      return ops.url;
    },
    start: async () => {
      try {
        await ops.start();
        admin = deps.kafka.admin();
        await producer.start();
        url = await listenForUrl(server, { port: config.PUSHLINE_API_PORT, host: config.PUSHLINE_API_HOST });
      } catch (err) {
        await close().catch((closeErr: unknown) =>
          log.warn({ err: closeErr }, 'cleanup after a failed start failed'),
        );
        throw err;
      }
      log.info({ url, opsUrl: ops.url }, 'push-api listening');
    },
    close,
  };
}
