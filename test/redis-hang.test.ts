import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { startRedis, type RedisInstance } from '@pushline/devstack';
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
});
