import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { waitUntil } from '@pushline/testkit';
import { startPlatform, type Platform } from '../support/platform.ts';

/**
 * The router against real connection servers: two of them over one Redis and Kafka, a real
 * socket.io-client device, and the router the push-api's composition root wires for direct pushes.
 */
describe('MessageRouter with real connection servers', () => {
  let platform: Platform;

  beforeEach(async () => {
    platform = await startPlatform('delivery-e2e', { processor: false });
  });
  afterEach(() => platform.close());

  it('delivers over HTTP, then follows the device to the server it reconnected to', async () => {
    const [serverA, serverB] = platform.servers;
    assert.ok(serverA && serverB);
    const { router } = platform.api;
    const msg = { payload: { hello: 1 }, source: 'direct' as const, timeoutMs: 5000 };

    const onA = await platform.connect(serverA, 'phone', 'user-1');
    const first = await router.toDevice('phone', { ...msg, messageId: 'm-1' });
    assert.deepEqual(
      { outcome: first.outcome, serverId: first.serverId, attempts: first.attempts },
      { outcome: 'delivered', serverId: serverA.serverId, attempts: 1 },
    );
    assert.deepEqual(
      onA.received.map((m) => [m.id, m.payload]),
      [['m-1', { hello: 1 }]],
    );

    // Reconnects to B; the router's cache still says A.
    onA.socket.disconnect();
    await waitUntil(() => serverA.connectionCount === 0, { what: 'A to see the disconnect' });
    const onB = await platform.connect(serverB, 'phone', 'user-1');
    const second = await router.toDevice('phone', { ...msg, messageId: 'm-2' });
    assert.deepEqual(
      { outcome: second.outcome, serverId: second.serverId, attempts: second.attempts },
      { outcome: 'delivered', serverId: serverB.serverId, attempts: 2 },
    );
    assert.deepEqual(
      [...onA.received, ...onB.received].map((m) => m.id),
      ['m-1', 'm-2'],
    );

    const gone = await router.toDevice('tablet', { ...msg, messageId: 'm-3' });
    assert.equal(gone.reason, 'not_registered');
  });
});
