/**
 * Measures the local delivery interface through internal HTTP with keep-alive against the
 * in-process call (docs/decisions/0005-delivery-transport.md).
 * Run: node services/connection-server/bench/deliver-http.ts
 *
 * One connection server, DEVICES acking websocket clients in this process, MESSAGES deliveries at
 * CONCURRENCY through (a) deliverLocal, (b) HttpDeliveryTransport → POST /internal/v1/deliver.
 * Kafka is replaced by a producer that drops records: connection events are not under test.
 */
import { performance } from 'node:perf_hooks';
import { connectionServerEnv, parseEnv } from '@pushline/config';
import { HttpDeliveryTransport } from '@pushline/delivery';
import { startRedis } from '@pushline/devstack';
import type { KafkaClient } from '@pushline/kafka';
import type { DeliverRequest, DeliverResult } from '@pushline/protocol';
import { RedisDeviceRegistry } from '@pushline/registry';
import { createMetricsRegistry, silentLogger, trace } from '@pushline/telemetry';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import { io as connect } from 'socket.io-client';
import { createConnectionServer } from '@pushline/connection-server';

const DEVICES = Number(process.env['DEVICES'] ?? 200);
const MESSAGES = Number(process.env['MESSAGES'] ?? 20000);
const CONCURRENCY = Number(process.env['CONCURRENCY'] ?? 200);
const secret = 's'.repeat(48);

const noKafka: KafkaClient = {
  producer: () => ({ start: async () => {}, send: async () => {}, close: async () => {} }),
  consumer: () => {
    throw new Error('not used');
  },
  admin: () => {
    throw new Error('not used');
  },
};

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

async function measure(name: string, deliver: (req: DeliverRequest) => Promise<DeliverResult>) {
  const latencies: number[] = [];
  let next = 0;
  let delivered = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < MESSAGES) {
        const n = next++;
        const t0 = performance.now();
        const r = await deliver({
          messageId: `${name}-${n}`,
          deviceId: `dev-${n % DEVICES}`,
          payload: { n },
          source: 'direct',
          timeoutMs: 5000,
        });
        latencies.push(performance.now() - t0);
        if (r.outcome === 'delivered') delivered++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    path: name,
    perSecond: Math.round(MESSAGES / seconds),
    p50ms: +pct(latencies, 50).toFixed(2),
    p99ms: +pct(latencies, 99).toFixed(2),
    delivered,
  };
}

const redisServer = await startRedis();
const redis = new Redis(redisServer.url);
const internalToken = 't'.repeat(32);
const server = createConnectionServer({
  config: parseEnv(connectionServerEnv, {
    PUSHLINE_INTERNAL_TOKEN: internalToken,
    PUSHLINE_DEVICE_JWT_SECRET: secret,
    PUSHLINE_REDIS_URL: redisServer.url,
    PUSHLINE_PORT: '0',
    PUSHLINE_INTERNAL_PORT: '0',
    PUSHLINE_HOST: '127.0.0.1',
    PUSHLINE_SERVER_ID: 'bench',
    PUSHLINE_CLOSE_GRACE_MS: '0',
  }),
  redis,
  registry: new RedisDeviceRegistry({ redis, keyPrefix: 'bench:' }),
  kafka: noKafka,
  logger: silentLogger(),
  metrics: createMetricsRegistry({}, false),
  tracer: trace.getTracer('bench'),
});
const transport = new HttpDeliveryTransport({ internalToken, logger: silentLogger() });
try {
  await server.start();
  const devices = [];
  for (let d = 0; d < DEVICES; d++) {
    const token = await new SignJWT({ uid: `u${d}` })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(`dev-${d}`)
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode(secret));
    const socket = connect(server.deviceUrl, {
      transports: ['websocket'],
      reconnection: false,
      auth: { token },
    });
    socket.on('message', (_m: unknown, ack: (a: unknown) => void) => ack({ ok: true }));
    socket.on('connect_error', (err) => console.error('connect_error', err.message));
    devices.push(socket);
  }
  await Promise.all(
    devices.map((s) =>
      s.connected ? Promise.resolve() : new Promise((resolve) => s.once('connect', () => resolve(undefined))),
    ),
  );
  console.log(JSON.stringify({ devices: DEVICES, messages: MESSAGES, concurrency: CONCURRENCY }));
  // Warm-up, then each path twice, alternating, so neither only runs on a cold or a hot JIT.
  await measure('warmup', (req) => server.deliverLocal(req));
  for (let round = 0; round < 2; round++) {
    console.log(JSON.stringify(await measure(`in-process-${round}`, (req) => server.deliverLocal(req))));
    console.log(
      JSON.stringify(
        await measure(`http-keepalive-${round}`, (req) => transport.deliver(server.internalUrl, req)),
      ),
    );
  }
  for (const d of devices) d.disconnect();
} finally {
  await transport.close();
  await server.close();
  await redis.quit();
  await redisServer.stop();
}
