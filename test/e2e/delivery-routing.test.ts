import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import { io as connectDevice, type Socket as DeviceSocket } from 'socket.io-client';
import { connectionServerEnv, parseEnv, topicNames } from '@pushline/config';
import { createConnectionServer, type ConnectionServer } from '@pushline/connection-server';
import { platformTopics, type KafkaClient } from '@pushline/kafka';
import { DeviceMessage } from '@pushline/protocol';
import { RedisDeviceRegistry } from '@pushline/registry';
import { runCleanup, type CleanupStep } from '@pushline/runtime';
import { createMetricsRegistry, silentLogger, trace } from '@pushline/telemetry';
import { testInfra, testKafkaClient, testSecret, uniquePrefix, waitUntil, within } from '@pushline/testkit';
import { DeviceLocator, HttpDeliveryTransport, MessageRouter } from '@pushline/delivery';

/**
 * The router against real connection servers: two of them over one Redis and Kafka, a real
 * socket.io-client device, and the router the way push-api and message-processor use it.
 */
describe('MessageRouter with real connection servers', () => {
  const jwtSecret = testSecret();
  const internalToken = testSecret();
  const tracer = trace.getTracer('pushline-delivery-test');
  let prefix: string;
  let redis: Redis;
  let kafka: KafkaClient;
  let registry: RedisDeviceRegistry;
  let cleanup: CleanupStep[];

  beforeEach(async () => {
    prefix = uniquePrefix('delivery-e2e');
    cleanup = [];
    redis = new Redis(testInfra().redisUrl);
    cleanup.push({ name: 'redis', run: async () => void (await redis.quit()) });
    kafka = testKafkaClient('delivery-e2e');
    const admin = kafka.admin();
    try {
      await admin.ensureTopics(platformTopics(topicNames(`${prefix}.`), 1));
    } finally {
      await admin.close();
    }
    registry = new RedisDeviceRegistry({ redis, keyPrefix: `${prefix}:` });
  });
  afterEach(async () => {
    // Devices and servers first (pushed last), then the clients they use.
    await runCleanup(cleanup.reverse());
  });

  async function startServer(serverId: string): Promise<ConnectionServer> {
    const infra = testInfra();
    const config = parseEnv(connectionServerEnv, {
      PUSHLINE_KAFKA_BROKERS: infra.kafkaBrokers.join(','),
      PUSHLINE_REDIS_URL: infra.redisUrl,
      PUSHLINE_TOPIC_PREFIX: `${prefix}.`,
      PUSHLINE_KEY_PREFIX: `${prefix}:`,
      PUSHLINE_INTERNAL_TOKEN: internalToken,
      PUSHLINE_SERVER_ID: serverId,
      PUSHLINE_HOST: '127.0.0.1',
      PUSHLINE_PORT: '0',
      PUSHLINE_INTERNAL_PORT: '0',
      PUSHLINE_DEVICE_JWT_SECRET: jwtSecret,
      PUSHLINE_DRAIN_WINDOW_MS: '0',
      PUSHLINE_CLOSE_GRACE_MS: '0',
      PUSHLINE_LOG_LEVEL: 'silent',
    });
    const server = createConnectionServer({
      config,
      redis,
      registry,
      kafka,
      logger: silentLogger(),
      metrics: createMetricsRegistry({ serverId }, false),
      tracer,
    });
    await server.start();
    cleanup.push({ name: `server ${serverId}`, run: () => server.close() });
    return server;
  }

  async function connect(server: ConnectionServer, deviceId: string, received: DeviceMessage[]) {
    const token = await new SignJWT({ uid: 'user-1' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(deviceId)
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(jwtSecret));
    const device: DeviceSocket = connectDevice(server.deviceUrl, {
      transports: ['websocket'],
      auth: { token },
      reconnection: false,
      forceNew: true,
    });
    cleanup.push({ name: `device ${deviceId}`, run: () => void device.disconnect() });
    device.on('message', (raw: unknown, ack: (answer: unknown) => void) => {
      received.push(DeviceMessage.parse(raw));
      ack({ ok: true });
    });
    const connected = new Promise<void>((resolve, reject) => {
      device.once('connect', () => resolve());
      device.once('connect_error', reject);
    });
    await within(connected, 10_000, `${deviceId} to connect to ${server.serverId}`);
    await waitUntil(async () => (await registry.lookup(deviceId))?.serverId === server.serverId, {
      what: `${deviceId} registered on ${server.serverId}`,
    });
    return device;
  }

  it('delivers over HTTP, then follows the device to the server it reconnected to', async () => {
    const serverA = await startServer(`${prefix}-a`);
    const serverB = await startServer(`${prefix}-b`);
    const transport = new HttpDeliveryTransport({ internalToken, logger: silentLogger() });
    cleanup.push({ name: 'transport', run: () => transport.close() });
    const locator = new DeviceLocator({ registry, tracer });
    const router = new MessageRouter({ locator, registry, transport, tracer, logger: silentLogger() });
    const msg = { payload: { hello: 1 }, source: 'direct' as const, timeoutMs: 5000 };

    const received: DeviceMessage[] = [];
    const onA = await connect(serverA, 'phone', received);
    const first = await router.toDevice('phone', { ...msg, messageId: 'm-1' });
    assert.deepEqual(
      { outcome: first.outcome, serverId: first.serverId, attempts: first.attempts },
      { outcome: 'delivered', serverId: serverA.serverId, attempts: 1 },
    );
    assert.deepEqual(
      received.map((m) => [m.id, m.payload]),
      [['m-1', { hello: 1 }]],
    );

    // Reconnects to B; the router's cache still says A.
    onA.disconnect();
    await waitUntil(() => serverA.connectionCount === 0, { what: 'A to see the disconnect' });
    await connect(serverB, 'phone', received);
    const second = await router.toDevice('phone', { ...msg, messageId: 'm-2' });
    assert.deepEqual(
      { outcome: second.outcome, serverId: second.serverId, attempts: second.attempts },
      { outcome: 'delivered', serverId: serverB.serverId, attempts: 2 },
    );
    assert.deepEqual(
      received.map((m) => m.id),
      ['m-1', 'm-2'],
    );

    const gone = await router.toDevice('tablet', { ...msg, messageId: 'm-3' });
    assert.equal(gone.reason, 'not_registered');
  });
});
