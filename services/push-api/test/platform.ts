import type { Socket } from 'socket.io-client';
import { connectionServerEnv, parseEnv } from '@pushline/config';
import {
  assembleConnectionServer,
  type AssembledConnectionServer,
  type ConnectionServer,
} from '@pushline/connection-server';
import { silentLogger } from '@pushline/telemetry';
import { testInfra, testSecret, uniquePrefix } from '@pushline/testkit';
// Devices are the same everywhere; the root tests' support is their one home.
import { connectDevice, type DeviceBehaviour, type TestDevice } from '../../../test/support/devices.ts';
import { startApi, type ApiHarness } from './harness.ts';

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
        ...testInfra().redisEnv,
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

  const connect: Platform['connect'] = (server, deviceId, userId, behaviour, claims) =>
    connectDevice({
      server,
      registry: h.registry,
      jwtSecret,
      deviceId,
      userId,
      ...(behaviour ? { behaviour } : {}),
      ...(claims ? { claims } : {}),
      track: (socket) => sockets.push(socket),
    });

  return {
    h,
    servers: servers.map((s) => s.server),
    jwtSecret,
    connect,
    close: () => h.close(),
  };
}
