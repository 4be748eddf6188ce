import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { startRedis, type RedisInstance } from '@pushline/devstack';
import { DeviceEvents } from '@pushline/protocol';
import type { Registry } from '@pushline/telemetry';
import { waitUntil, within } from '@pushline/testkit';
import { startOwnRedisPlatform, type OwnRedisPlatform } from './support/own-redis-platform.ts';

/**
 * A Redis that stops answering (SIGSTOP: connections stay open, nothing comes back) must not hang
 * the paths that wait on it: every command is bounded by PUSHLINE_REDIS_COMMAND_TIMEOUT_MS, so a
 * direct push and a registry lookup fail with a clear error within it, and everything works again
 * once Redis answers (SIGCONT). The test owns its redis-server, so stopping it disturbs no other test.
 */

const COMMAND_TIMEOUT_MS = 1000;
/** How long the test waits for an answer: far above the bound, far below "hangs". */
const ANSWER_WITHIN_MS = 10_000;

/** Sum of a counter's samples with these labels. */
async function metricValue(metrics: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = metrics.getSingleMetric(name);
  if (!metric) return 0;
  const data = await metric.get();
  return data.values
    .filter((v) => Object.entries(labels).every(([k, val]) => String(v.labels[k]) === val))
    .reduce((sum, v) => sum + v.value, 0);
}

let redis: RedisInstance | undefined;
let platform: OwnRedisPlatform | undefined;
let stopped = false;

function resume(): void {
  if (redis && stopped) {
    process.kill(redis.pid, 'SIGCONT');
    stopped = false;
  }
}

before(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  resume();
  await platform?.close();
  platform = undefined;
});
after(async () => {
  resume();
  await redis?.stop();
});

describe('a Redis that stops answering (SIGSTOP)', () => {
  it('fails direct pushes and registry lookups within the command timeout, and recovers after SIGCONT', async () => {
    assert.ok(redis);
    platform = await startOwnRedisPlatform('redis-hang', redis.url, {
      env: {
        PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS),
        PUSHLINE_REDIS_CONNECT_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS),
      },
    });
    const [server] = platform.servers;
    assert.ok(server);
    // Connected and registered before the fault; never pushed to, so no cache knows where it is.
    const device = await platform.connect(server, 'tv');

    process.kill(redis.pid, 'SIGSTOP');
    stopped = true;

    await assert.rejects(
      within(platform.registry.lookup('tv'), ANSWER_WITHIN_MS, 'the registry lookup to fail'),
      /Command timed out/,
    );
    const push = await platform.call(
      'POST',
      '/v1/devices/tv/messages',
      { payload: { n: 1 } },
      ANSWER_WITHIN_MS,
    );
    assert.equal(push.status, 503, JSON.stringify(push.body));
    assert.match(push.contentType, /^application\/problem\+json/);
    assert.match(String((push.body as { type?: string }).type), /service-unavailable$/);
    const presence = await platform.call('GET', '/v1/devices/tv/presence', undefined, ANSWER_WITHIN_MS);
    assert.equal(presence.status, 503);
    assert.equal(device.received.length, 0, 'nothing was delivered while the registry could not be read');

    resume();

    // Connections that answered nothing were torn down; the first commands after SIGCONT may meet
    // one still reconnecting, so the check is "works again", not "works on the first try".
    await waitUntil(
      async () => (await platform?.registry.lookup('tv').catch(() => null))?.deviceId === 'tv',
      {
        timeoutMs: 15_000,
        what: 'registry lookups to work again',
      },
    );
    const again = await waitUntil(
      async () => {
        const res = await platform?.call('POST', '/v1/devices/tv/messages', { payload: { n: 2 } });
        return res?.status === 200 ? res : undefined;
      },
      { timeoutMs: 15_000, what: 'a direct push to be delivered again' },
    );
    assert.equal((again.body as { outcome?: string }).outcome, 'delivered');
    assert.deepEqual(
      device.received.map((m) => m.payload),
      [{ n: 2 }],
    );
  });

  // Promises nobody handles: the classic adapter publishes a broadcast without awaiting the
  // PUBLISH, and socket.io asks either adapter for the server count (PUBSUB) of an acked broadcast
  // without a catch. With a command timeout, a Redis that stopped answering rejects them, and an
  // unhandled rejection would end this process (failing the run) instead of being counted.
  for (const adapter of ['sharded', 'classic'] as const) {
    it(`keeps a ${adapter}-adapter topic broadcast working and counts the failed Redis commands instead of ending the process`, async () => {
      assert.ok(redis);
      platform = await startOwnRedisPlatform(`redis-hang-${adapter}`, redis.url, {
        env: {
          PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS),
          PUSHLINE_SOCKETIO_ADAPTER: adapter,
        },
      });
      const [server] = platform.servers;
      assert.ok(server);
      const listener = await platform.connect(server, 'radio', { topics: ['news'] });
      assert.deepEqual(await listener.request(DeviceEvents.subscribe, { topic: 'news' }), {
        ok: true,
        topic: 'news',
      });
      const failures = () =>
        metricValue(server.metrics, 'pushline_loop_failures_total', { loop: 'socketio_adapter' });
      assert.equal(await failures(), 0);

      process.kill(redis.pid, 'SIGSTOP');
      stopped = true;
      // Local subscribers still get it; the copy for the other servers is what cannot be published.
      const during = await server.server.broadcast({
        messageId: 'news-during',
        topic: 'news',
        payload: { n: 1 },
        timeoutMs: 2_000,
      });
      assert.equal(during.delivered, 1);
      await waitUntil(async () => (await failures()) >= 1, { what: 'the failed PUBLISH to be counted' });

      resume();
      await waitUntil(
        async () => {
          const after = await server.server.broadcast({
            messageId: `news-after-${Date.now()}`,
            topic: 'news',
            payload: { n: 2 },
            timeoutMs: 2_000,
          });
          return after.delivered === 1;
        },
        { timeoutMs: 15_000, what: 'broadcasts to work after SIGCONT' },
      );
      assert.ok(listener.received.some((m) => m.id === 'news-during'));
    });
  }
});
