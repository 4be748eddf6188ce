import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { topicNames } from '@pushline/config';
import { ConnectionEvent } from '@pushline/protocol';
import { collectRecords, recordJson, waitUntil } from '@pushline/testkit';
import { createWorld, metricValue, type TestWorld } from './helpers.ts';

describe('connection events', () => {
  let world: TestWorld;
  beforeEach(async () => {
    world = await createWorld('events');
  });
  afterEach(async () => {
    await world.close();
  });

  it('publishes connected and disconnected (with reason and duration) keyed by device id, in the v1 schema', async () => {
    const { server, metrics } = await world.startServer({ env: { PUSHLINE_SERVER_ID: 'srv-events' } });
    const deviceId = `${world.prefix}-dev`;
    const device = await world.connect(
      server.deviceUrl,
      await world.token({ sub: deviceId, uid: 'u-1', tid: 't-1' }),
    );
    await waitUntil(() => world.registry.lookup(deviceId), { what: 'registration' });
    device.disconnect();

    const records = await collectRecords(world.kafka, topicNames(world.topicPrefix).connectionEvents, 2, {
      filter: (r) => r.key === deviceId,
    });
    const events = records.map((r) => ConnectionEvent.parse(recordJson(r)));
    const [connected, gone] = events;
    assert.equal(connected?.type, 'connected');
    assert.equal(gone?.type, 'disconnected');
    assert.ok(connected && gone && gone.type === 'disconnected');
    assert.deepEqual(
      { ...connected, at: 0 },
      {
        v: 1,
        type: 'connected',
        deviceId,
        userId: 'u-1',
        tenantId: 't-1',
        serverId: 'srv-events',
        connectionId: connected.connectionId,
        at: 0,
      },
    );
    assert.equal(gone.connectionId, connected.connectionId);
    assert.equal(gone.reason, 'client_disconnect');
    assert.equal(gone.durationMs, gone.at - connected.at);
    // One device's events share a partition, so they stay in order.
    assert.equal(records[0]?.partition, records[1]?.partition);
    await waitUntil(
      async () => (await metricValue(metrics, 'pushline_connection_events_total', { result: 'sent' })) === 2,
      {
        what: 'events counted as sent',
      },
    );
  });

  it('reports the server-side reasons: replaced and server_shutdown', async () => {
    const { server } = await world.startServer();
    const deviceId = `${world.prefix}-dev`;
    const token = await world.token({ sub: deviceId });
    await world.connect(server.deviceUrl, token);
    await world.connect(server.deviceUrl, token);
    await server.close();

    const records = await collectRecords(world.kafka, topicNames(world.topicPrefix).connectionEvents, 4, {
      filter: (r) => r.key === deviceId,
    });
    const reasons = records
      .map((r) => ConnectionEvent.parse(recordJson(r)))
      .map((e) => (e.type === 'disconnected' ? e.reason : e.type));
    // The replaced connection's disconnect is published before its successor's connect, so a
    // consumer that keeps the last event per device ends with the device online.
    assert.deepEqual(reasons, ['connected', 'replaced', 'connected', 'server_shutdown']);
  });
});
