import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ReconnectHint } from '@pushline/protocol';
import { waitUntil } from '@pushline/testkit';
import { createWorld, disconnected, metricValue, nextEvent, type TestWorld } from './helpers.ts';

describe('liveness', () => {
  let world: TestWorld;
  beforeEach(async () => {
    world = await createWorld('liveness');
  });
  afterEach(async () => {
    await world.close();
  });

  it('recycles a connection at its lifetime: reconnect hint, close, entry removed', async () => {
    const { server, metrics } = await world.startServer({
      env: {
        PUSHLINE_MAX_CONNECTION_LIFETIME_S: '1',
        PUSHLINE_LIFETIME_JITTER_S: '0',
        PUSHLINE_CLOSE_GRACE_MS: '300',
      },
    });
    const device = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    const hint = ReconnectHint.parse(await nextEvent(device, 'reconnect_hint', 5_000));
    assert.equal(hint.reason, 'lifetime_expired');
    assert.ok(hint.afterMs >= 0 && hint.afterMs <= 300);
    assert.equal(await disconnected(device), 'io server disconnect');
    await waitUntil(async () => (await world.registry.lookup('dev-1')) === null, { what: 'entry removed' });
    assert.equal(await metricValue(metrics, 'pushline_disconnects_total', { reason: 'lifetime_expired' }), 1);
  });

  it('closes idle connections', async () => {
    const { server, metrics } = await world.startServer({ env: { PUSHLINE_IDLE_TIMEOUT_S: '1' } });
    const device = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    const hint = ReconnectHint.parse(await nextEvent(device, 'reconnect_hint', 5_000));
    assert.deepEqual(hint, { reason: 'idle', afterMs: 0 });
    await disconnected(device);
    await waitUntil(
      async () =>
        (await metricValue(metrics, 'pushline_disconnects_total', { reason: 'idle_timeout' })) === 1,
      {
        what: 'idle disconnect counted',
      },
    );
  });

  it('refreshes entries that would expire before their connection is recycled', async () => {
    const { server, metrics } = await world.startServer({
      env: {
        PUSHLINE_REGISTRY_TTL_S: '2',
        PUSHLINE_REGISTRY_REFRESH_S: '1',
        PUSHLINE_MAX_CONNECTION_LIFETIME_S: '600',
      },
    });
    await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1', uid: 'u-1' }));
    const first = await waitUntil(() => world.registry.lookup('dev-1'), { what: 'entry' });
    // Outliving its first TTL several times over is only possible through refreshes.
    await waitUntil(
      async () => {
        const r = await world.registry.lookup('dev-1');
        return r !== null && r.lastSeen >= first.connectedAt + 4_000;
      },
      { timeoutMs: 10_000, what: 'entry refreshed past several TTLs' },
    );
    assert.equal((await world.registry.userDevices('u-1')).length, 1);
    assert.ok(
      (await metricValue(metrics, 'pushline_registry_ops_total', { op: 'refresh', result: 'ok' })) >= 3,
    );
  });

  it('does not refresh entries when connections are recycled before their TTL (no write per heartbeat)', async () => {
    const { server, metrics } = await world.startServer({
      env: {
        PUSHLINE_REGISTRY_TTL_S: '60',
        PUSHLINE_REGISTRY_REFRESH_S: '1',
        PUSHLINE_MAX_CONNECTION_LIFETIME_S: '30',
        PUSHLINE_LIFETIME_JITTER_S: '5',
      },
    });
    await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    await waitUntil(() => world.registry.lookup('dev-1'), { what: 'entry' });
    await waitUntil(
      async () => (await metricValue(metrics, 'pushline_loop_runs_total', { loop: 'registry_refresh' })) >= 3,
      { timeoutMs: 10_000, what: 'three refresh loop runs' },
    );
    assert.equal(await metricValue(metrics, 'pushline_registry_ops_total', { op: 'refresh' }), 0);
  });
});
