import { SignJWT } from 'jose';
import { io, type Socket } from 'socket.io-client';
import { connectionServerEnv, parseEnv } from '@pushline/config';
import {
  assembleConnectionServer,
  type AssembledConnectionServer,
  type ConnectionServer,
} from '@pushline/connection-server';
import { DeviceEvents, DeviceMessage } from '@pushline/protocol';
import { silentLogger } from '@pushline/telemetry';
import { testInfra, testSecret, uniquePrefix, waitUntil, within } from '@pushline/testkit';
import { startApi, type ApiHarness } from './harness.ts';

/** How a test device answers `message`. */
export type DeviceBehaviour = 'ack' | 'reject' | 'silent' | 'disconnect';

export interface TestDevice {
  readonly id: string;
  readonly userId: string;
  readonly socket: Socket;
  readonly received: DeviceMessage[];
  behaviour: DeviceBehaviour;
  /** Resolves with the next message this device receives. */
  nextMessage(timeoutMs?: number): Promise<DeviceMessage>;
  /** Emits with an ack and resolves with the ack. */
  request(event: string, body: unknown, timeoutMs?: number): Promise<unknown>;
}

export interface Platform {
  readonly h: ApiHarness;
  readonly servers: readonly ConnectionServer[];
  readonly jwtSecret: string;
  connect(
    server: ConnectionServer,
    deviceId: string,
    userId: string,
    behaviour?: DeviceBehaviour,
    claims?: { topics?: string[] },
  ): Promise<TestDevice>;
  close(): Promise<void>;
}

/**
 * Two (or more) in-process connection servers, a push-api, and real socket.io-client devices, all
 * on one prefix against the run's real Kafka and Redis, each assembled as its main.ts assembles it:
 * stored messages go through the Redis offline store, which the servers drain when a device connects.
 */
export async function startPlatform(
  label: string,
  options: { servers?: number; serverEnv?: Record<string, string>; apiEnv?: Record<string, string> } = {},
): Promise<Platform> {
  const prefix = uniquePrefix(label);
  const internalToken = testSecret();
  const jwtSecret = testSecret();
  const h = await startApi({ label, prefix, internalToken, env: options.apiEnv ?? {} });
  const sockets: Socket[] = [];
  const servers: AssembledConnectionServer[] = [];
  h.defer({
    name: 'devices',
    run: () => {
      for (const s of sockets) s.disconnect();
    },
  });
  h.defer({
    name: 'connection servers',
    run: async () => void (await Promise.allSettled(servers.map((s) => s.close()))),
  });
  try {
    for (let i = 0; i < (options.servers ?? 2); i++) {
      const config = parseEnv(connectionServerEnv, {
        PUSHLINE_KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
        PUSHLINE_REDIS_URL: testInfra().redisUrl,
        PUSHLINE_TOPIC_PREFIX: `${prefix}.`,
        PUSHLINE_KEY_PREFIX: `${prefix}:`,
        PUSHLINE_INTERNAL_TOKEN: internalToken,
        PUSHLINE_DEVICE_JWT_SECRET: jwtSecret,
        PUSHLINE_SERVER_ID: `${prefix}-srv-${String.fromCharCode(97 + i)}`,
        PUSHLINE_HOST: '127.0.0.1',
        PUSHLINE_PORT: '0',
        PUSHLINE_INTERNAL_PORT: '0',
        PUSHLINE_CLOSE_GRACE_MS: '100',
        PUSHLINE_DRAIN_WINDOW_MS: '100',
        PUSHLINE_LOG_LEVEL: 'silent',
        ...options.serverEnv,
      });
      const server = assembleConnectionServer(config, {
        logger: silentLogger(),
        redis: h.redis,
        kafka: h.kafka,
      });
      servers.push(server);
      await server.start();
    }
  } catch (err) {
    await h.close().catch(() => {});
    throw err;
  }

  const connect: Platform['connect'] = async (server, deviceId, userId, behaviour = 'ack', claims = {}) => {
    const token = await new SignJWT({ uid: userId, ...claims })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(deviceId)
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(jwtSecret));
    const socket = io(server.deviceUrl, { transports: ['websocket'], reconnection: false, auth: { token } });
    sockets.push(socket);
    const received: DeviceMessage[] = [];
    const waiters: ((m: DeviceMessage) => void)[] = [];
    const device: TestDevice = {
      id: deviceId,
      userId,
      socket,
      received,
      behaviour,
      nextMessage: (timeoutMs = 5_000) =>
        within(
          new Promise<DeviceMessage>((resolve) => waiters.push(resolve)),
          timeoutMs,
          `a message for ${deviceId}`,
        ),
      request: (event, body, timeoutMs = 5_000) =>
        within(
          socket.timeout(timeoutMs).emitWithAck(event, body) as Promise<unknown>,
          timeoutMs + 500,
          `ack of ${event}`,
        ),
    };
    socket.on(DeviceEvents.message, (raw: unknown, ack: (answer: unknown) => void) => {
      const msg = DeviceMessage.parse(raw);
      received.push(msg);
      for (const w of waiters.splice(0)) w(msg);
      switch (device.behaviour) {
        case 'ack':
          return ack({ ok: true });
        case 'reject':
          return ack({ ok: false, reason: 'muted' });
        case 'silent':
          return;
        case 'disconnect':
          socket.disconnect();
          return;
      }
    });
    await within(
      new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('connect_error', (err) => reject(err));
      }),
      5_000,
      `${deviceId} to connect`,
    );
    await waitUntil(async () => (await h.registry.lookup(deviceId))?.serverId === server.serverId, {
      what: `${deviceId} registered on ${server.serverId}`,
    });
    return device;
  };

  return {
    h,
    servers: servers.map((s) => s.server),
    jwtSecret,
    connect,
    close: () => h.close(),
  };
}
