import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { io, type Socket } from 'socket.io-client';
import { startKafka, startRedis, type KafkaInstance, type RedisInstance } from '@pushline/devstack';
import { DeviceEvents } from '@pushline/protocol';
import { waitUntil, within } from '@pushline/testkit';
import {
  killAllServices,
  logLines,
  serviceWorld,
  startServiceProcess,
  type ServiceProcess,
  type ServiceWorld,
} from './support/service-processes.ts';

/**
 * A shutdown must end even when a dependency is gone: every service, as its own process, exits by
 * itself after SIGTERM while Redis does not answer (SIGSTOP) and while the Kafka broker is dead
 * (kill -9). These tests stop and kill infrastructure, so they run on a private redis-server and a
 * private broker, never on the suite's shared ones.
 */

/** Long enough that the services' own step bounds, not this deadline, end their shutdowns. */
const DEADLINE_MS = 40_000;

const SERVICE_ENV = {
  PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: '1000',
  PUSHLINE_REDIS_CONNECT_TIMEOUT_MS: '1000',
  PUSHLINE_SHUTDOWN_DEADLINE_MS: String(DEADLINE_MS),
  PUSHLINE_CLOSE_GRACE_MS: '200',
  PUSHLINE_DRAIN_WINDOW_MS: '200',
};

let redis: RedisInstance | undefined;
let kafka: KafkaInstance | undefined;
const devices: Socket[] = [];

before(async () => {
  [redis, kafka] = await Promise.all([startRedis(), startKafka({ heapOptions: ['-Xms128m', '-Xmx512m'] })]);
});

// Per test, pass or fail: a test that failed half-way must not leave services running (their
// pipes would keep this file's process, and so `npm test`, alive) nor Redis stopped.
afterEach(async () => {
  for (const d of devices.splice(0)) d.disconnect();
  await killAllServices();
  if (redis) {
    try {
      process.kill(redis.pid, 'SIGCONT');
    } catch {
      // already gone
    }
  }
});

after(async () => {
  await Promise.allSettled([redis?.stop(), kafka?.stop()]);
});

/** Starts the three services on the private Redis and broker, and connects one device. */
async function startAll(label: string): Promise<{ world: ServiceWorld; services: ServiceProcess[] }> {
  assert.ok(redis && kafka);
  const world = serviceWorld(label, { redisUrl: redis.url, kafkaBrokers: kafka.brokers }, SERVICE_ENV);
  const services = await Promise.all(
    (['connection-server', 'message-processor', 'push-api'] as const).map((name) =>
      startServiceProcess(name, world),
    ),
  );
  const server = services[0];
  assert.ok(server?.deviceUrl);
  const token = await new SignJWT({ uid: 'u-1' })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(`${world.prefix}-device`)
    .setExpirationTime('10m')
    .sign(new TextEncoder().encode(world.jwtSecret));
  const device = io(server.deviceUrl, { transports: ['websocket'], reconnection: false, auth: { token } });
  devices.push(device);
  await within(
    new Promise<void>((resolve, reject) => {
      device.once('connect', () => resolve());
      device.once('connect_error', reject);
    }),
    10_000,
    'the device to connect',
  );
  // Registered before any fault: a registration cut off by one closes the device (by design).
  const api = services[2];
  assert.ok(api?.apiUrl);
  await waitUntil(
    async () => {
      const res = await fetch(`${api.apiUrl}/v1/devices/${world.prefix}-device/presence`, {
        headers: { authorization: `Bearer ${world.apiKey}` },
      });
      return res.ok && ((await res.json()) as { online?: boolean }).online === true;
    },
    { what: 'the device to be registered' },
  );
  return { world, services };
}

/** SIGTERMs every service and waits until each has exited on its own. */
async function stopAll(services: ServiceProcess[]): Promise<void> {
  for (const s of services) s.child.kill('SIGTERM');
  const exits = await Promise.all(
    services.map((s) =>
      within(s.exited, DEADLINE_MS + 20_000, `${s.name} to exit after SIGTERM`).then(
        (exit) => ({ s, exit }),
        (err: unknown) => {
          throw new Error(`${String(err)}\n--- ${s.name} output ---\n${s.output().slice(-4000)}`);
        },
      ),
    ),
  );
  for (const { s, exit } of exits) {
    assert.equal(exit.signal, null, `${s.name} exited by itself, not by a signal's default action`);
    assert.ok(
      logLines(s).some((l) => String(l['msg']).endsWith('stopping')),
      `${s.name} logged its shutdown`,
    );
  }
}

describe('every service exits by itself after SIGTERM', () => {
  it('while Redis does not answer (SIGSTOP)', async () => {
    assert.ok(redis);
    const { services } = await startAll('stop-redis-hung');
    const hint = new Promise<unknown>((resolve) => devices.at(-1)?.once(DeviceEvents.reconnect, resolve));
    process.kill(redis.pid, 'SIGSTOP');
    try {
      await stopAll(services);
      // The drain does not need Redis: the device was still told to go elsewhere.
      const got = await within(hint, 1_000, 'the reconnect hint the device got during the drain');
      assert.equal((got as { reason?: unknown }).reason, 'server_shutdown');
    } finally {
      process.kill(redis.pid, 'SIGCONT');
    }
  });

  it('while the Kafka broker is dead (kill -9)', async () => {
    assert.ok(kafka);
    const { services } = await startAll('stop-kafka-dead');
    process.kill(kafka.pid, 'SIGKILL');
    await stopAll(services);
  });
});
