import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { DeliverRequest } from '@pushline/protocol';
import { RedisDeviceRegistry, RegistryIncompleteError } from '@pushline/registry';
import {
  createMetricsRegistry,
  createSpanRecorder,
  SpanKind,
  silentLogger,
  startTracing,
  trace,
  withSpan,
  type Registry,
  type SpanRecorder,
  type TracingHandle,
} from '@pushline/telemetry';
import { testInfra, uniquePrefix } from '@pushline/testkit';
import {
  ChannelDeliveryTransport,
  DeviceLocator,
  MessageRouter,
  PartialDeliveryError,
  type OutgoingMessage,
} from '@pushline/delivery';
import { closedPortUrl, startStubServer, type StubServer } from './channel-stub.ts';
import { CountingRegistry, deviceRecord, serverLoad } from './registry-fixtures.ts';

const TOKEN = 'internal-token-for-tests-0123456789';

function message(overrides: Partial<OutgoingMessage> = {}): OutgoingMessage {
  return { messageId: 'm-1', payload: { n: 1 }, source: 'direct', timeoutMs: 2000, ...overrides };
}

describe('MessageRouter', () => {
  let redis: Redis;
  let tracing: TracingHandle;
  let recorder: SpanRecorder;
  let registry: CountingRegistry;
  let serverA: StubServer;
  let serverB: StubServer;
  let transport: ChannelDeliveryTransport;
  let locator: DeviceLocator;
  let metrics: Registry;
  let router: MessageRouter;
  const tracer = trace.getTracer('pushline-delivery-test');

  before(() => {
    redis = new Redis(testInfra().redisUrl);
    recorder = createSpanRecorder();
    tracing = startTracing({
      serviceName: 'delivery-test',
      instanceId: 't',
      spanProcessors: [recorder.spanProcessor],
    });
  });
  after(async () => {
    await tracing.close();
    await redis.quit();
  });

  beforeEach(async () => {
    registry = new CountingRegistry(
      new RedisDeviceRegistry({ redis, keyPrefix: `${uniquePrefix('router')}:` }),
    );
    serverA = await startStubServer({ token: TOKEN, serverId: 'srv-a' });
    serverB = await startStubServer({ token: TOKEN, serverId: 'srv-b' });
    transport = new ChannelDeliveryTransport({ internalToken: TOKEN, logger: silentLogger() });
    metrics = createMetricsRegistry({}, false);
    locator = new DeviceLocator({ registry, tracer });
    router = new MessageRouter({ locator, registry, transport, tracer, logger: silentLogger(), metrics });
    recorder.reset();
  });
  afterEach(async () => {
    await transport.close();
    await serverA.close();
    await serverB.close();
  });

  /** Registers the device in the real registry and "connects" it to the stub server. */
  async function connect(server: StubServer, deviceId: string, connectionId: string, userId = 'user-1') {
    await registry.register(
      deviceRecord({ deviceId, userId, connectionId, serverId: server.serverId, serverUrl: server.url }),
      60,
    );
    server.connections.set(deviceId, connectionId);
  }

  function delivered(server: StubServer): DeliverRequest[] {
    return server.calls.filter((c) => c.op === 'deliver').map((c) => c.req as DeliverRequest);
  }

  async function deliveriesCounted(outcome: string): Promise<number> {
    const metric = await metrics.getSingleMetric('pushline_router_deliveries_total')?.get();
    return (metric?.values ?? [])
      .filter((v) => v.labels['outcome'] === outcome)
      .reduce((n, v) => n + v.value, 0);
  }

  it('delivers to the connection the registry names', async () => {
    await connect(serverA, 'dev-1', 'c-1');
    const result = await router.toDevice('dev-1', message({ from: 'dev-0', source: 'd2d' }));
    assert.deepEqual(result, {
      outcome: 'delivered',
      latencyMs: 1,
      deviceId: 'dev-1',
      serverId: 'srv-a',
      attempts: 1,
    });
    const [req] = delivered(serverA);
    assert.equal(req?.deviceId, 'dev-1');
    assert.equal(req?.connectionId, 'c-1');
    assert.equal(req?.from, 'dev-0');
    assert.equal(req?.source, 'd2d');
    assert.equal(delivered(serverB).length, 0);
    assert.equal(await deliveriesCounted('delivered'), 1);
  });

  it('answers not_registered for a device that is nowhere, without calling a server', async () => {
    const result = await router.toDevice('ghost', message());
    assert.deepEqual(result, {
      outcome: 'not_connected',
      reason: 'not_registered',
      latencyMs: 0,
      deviceId: 'ghost',
      attempts: 1,
    });
    assert.equal(serverA.calls.length + serverB.calls.length, 0);
    assert.equal(await deliveriesCounted('not_connected'), 1);
  });

  it('confirms a cached "not registered" against the registry: a device that just connected is delivered', async () => {
    locator = new DeviceLocator({ registry, tracer, negativeTtlMs: 60_000 });
    router = new MessageRouter({ locator, registry, transport, tracer, logger: silentLogger() });
    const before = await router.toDevice('dev-late', message({ messageId: 'm-before' }));
    assert.deepEqual([before.outcome, before.reason], ['not_connected', 'not_registered']);
    await connect(serverA, 'dev-late', 'c-late');
    const after = await router.toDevice('dev-late', message({ messageId: 'm-after' }));
    assert.deepEqual([after.outcome, after.serverId], ['delivered', 'srv-a']);
    assert.equal(delivered(serverA)[0]?.messageId, 'm-after');
    // Still gone: the negative answer is confirmed once more and stays not_connected.
    const ghost = await router.toDevice('ghost', message());
    assert.equal((await router.toDevice('ghost', message())).outcome, 'not_connected');
    assert.equal(ghost.reason, 'not_registered');
  });

  it('follows a device that moved to another server since it was cached', async () => {
    await connect(serverA, 'dev-1', 'c-a');
    assert.equal((await router.toDevice('dev-1', message())).serverId, 'srv-a');

    // The device reconnects to B; the locator still holds A (no connection event applied).
    serverA.connections.delete('dev-1');
    await connect(serverB, 'dev-1', 'c-b');
    const result = await router.toDevice('dev-1', message({ messageId: 'm-2' }));
    assert.deepEqual(
      { outcome: result.outcome, serverId: result.serverId, attempts: result.attempts },
      { outcome: 'delivered', serverId: 'srv-b', attempts: 2 },
    );
    assert.equal(delivered(serverA).at(-1)?.connectionId, 'c-a');
    assert.equal(delivered(serverB).at(-1)?.connectionId, 'c-b');
    // The fresh record is cached now: the next message goes straight to B.
    const next = await router.toDevice('dev-1', message({ messageId: 'm-3' }));
    assert.deepEqual(
      { serverId: next.serverId, attempts: next.attempts },
      { serverId: 'srv-b', attempts: 1 },
    );
    assert.equal(registry.lookups, 2);
  });

  it('does not retry when the registry still names the same connection, and forgets it', async () => {
    await connect(serverA, 'dev-1', 'c-a');
    await router.toDevice('dev-1', message());
    serverA.connections.delete('dev-1'); // gone, registry entry not yet removed
    const result = await router.toDevice('dev-1', message({ messageId: 'm-2' }));
    assert.deepEqual(
      { outcome: result.outcome, reason: result.reason, attempts: result.attempts },
      { outcome: 'not_connected', reason: 'not_connected_here', attempts: 1 },
    );
    assert.equal(delivered(serverA).length, 2);
    assert.equal((await locator.lookup('dev-1')).cached, false);
  });

  it('reports server_unreachable for a device on a server that is gone', async () => {
    await registry.register(
      deviceRecord({ deviceId: 'dev-1', serverId: 'srv-dead', serverUrl: await closedPortUrl() }),
      60,
    );
    const result = await router.toDevice('dev-1', message());
    assert.deepEqual(
      { outcome: result.outcome, reason: result.reason, serverId: result.serverId },
      { outcome: 'not_connected', reason: 'server_unreachable', serverId: 'srv-dead' },
    );
  });

  it('hands devices of its own server to local delivery without the channel', async () => {
    await connect(serverA, 'dev-1', 'c-a');
    const local: DeliverRequest[] = [];
    router = new MessageRouter({
      locator,
      registry,
      transport,
      tracer,
      logger: silentLogger(),
      local: {
        serverId: 'srv-a',
        deliver: async (req) => {
          local.push(req);
          return { outcome: 'delivered', latencyMs: 0.2 };
        },
      },
    });
    const result = await router.toDevice('dev-1', message());
    assert.equal(result.outcome, 'delivered');
    assert.equal(local[0]?.connectionId, 'c-a');
    assert.equal(serverA.calls.length, 0);
  });

  it('traces resolve, registry lookup (on a miss only) and a client deliver span under the caller', async () => {
    await connect(serverA, 'dev-1', 'c-1');
    const traceId = await withSpan(tracer, 'POST /v1/push', { kind: SpanKind.SERVER }, async (span) => {
      await router.toDevice('dev-1', message());
      await router.toDevice('dev-1', message({ messageId: 'm-2' }));
      return span.spanContext().traceId;
    });
    await recorder.flush();
    const spans = recorder.spans();
    assert.ok(spans.every((s) => s.spanContext().traceId === traceId));
    const names = spans.map((s) => s.name);
    assert.equal(names.filter((n) => n === 'registry lookup').length, 1);
    const resolves = spans.filter((s) => s.name === 'resolve target');
    assert.deepEqual(
      resolves.map((s) => s.attributes['pushline.cache_hit']),
      [false, true],
    );
    assert.ok(resolves.every((s) => s.attributes['pushline.target.type'] === 'device'));
    const deliver = spans.find((s) => s.name === 'deliver');
    assert.equal(deliver?.kind, SpanKind.CLIENT);
    assert.equal(deliver?.attributes['pushline.outcome'], 'delivered');
    assert.equal(deliver?.attributes['server.address'], '127.0.0.1');
    // The server continues the trace from the deliver span.
    const sentTraceparent = delivered(serverA)[0]?.trace?.traceparent;
    assert.ok(sentTraceparent?.includes(deliver?.spanContext().spanId ?? 'missing'), sentTraceparent);
  });

  it('parents its spans on msg.trace when the caller has no active span', async () => {
    await connect(serverA, 'dev-1', 'c-1');
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await router.toDevice('dev-1', message({ trace: { traceparent } }));
    await recorder.flush();
    const spans = recorder.spans();
    assert.ok(spans.length >= 2);
    assert.ok(spans.every((s) => s.spanContext().traceId === '0af7651916cd43dd8448eb211c80319c'));
  });

  it('fans a user message out to every device, across servers, in one registry read', async () => {
    await connect(serverA, 'phone', 'c-phone', 'alice');
    await connect(serverB, 'laptop', 'c-laptop', 'alice');
    await connect(serverB, 'other', 'c-other', 'bob');
    const results = await router.toUser('alice', message({ source: 'async' }));
    assert.deepEqual(results.map((r) => [r.deviceId, r.serverId, r.outcome, r.attempts]).sort(), [
      ['laptop', 'srv-b', 'delivered', 1],
      ['phone', 'srv-a', 'delivered', 1],
    ]);
    assert.deepEqual(
      delivered(serverA).map((r) => [r.deviceId, r.connectionId]),
      [['phone', 'c-phone']],
    );
    assert.deepEqual(
      delivered(serverB).map((r) => [r.deviceId, r.connectionId]),
      [['laptop', 'c-laptop']],
    );
    assert.equal(registry.userDeviceReads, 1);
    assert.equal(registry.lookups, 0);
    assert.deepEqual(await router.toUser('nobody', message()), []);
  });

  it('reports a user fan-out where one server misbehaves as a PartialDeliveryError', async () => {
    await connect(serverA, 'phone', 'c-phone', 'alice');
    await connect(serverB, 'laptop', 'c-laptop', 'alice');
    // A server that refuses the internal token makes that device's call throw.
    await serverB.close();
    serverB = await startStubServer({ token: 'another-token-0123456789abcdef', serverId: 'srv-b' });
    await registry.register(
      deviceRecord({
        deviceId: 'laptop',
        userId: 'alice',
        connectionId: 'c-laptop',
        serverId: 'srv-b',
        serverUrl: serverB.url,
      }),
      60,
    );
    await assert.rejects(router.toUser('alice', message()), (err: unknown) => {
      assert.ok(err instanceof PartialDeliveryError);
      assert.equal(err.errors.length, 1);
      assert.deepEqual(
        err.results.map((r) => r.deviceId),
        ['phone'],
      );
      assert.deepEqual(err.failedDeviceIds, ['laptop'], 'the device whose delivery threw is named');
      return true;
    });
    assert.equal(await deliveriesCounted('error'), 1);
  });

  it('broadcasts a topic through a live server that is not draining', async () => {
    serverA.broadcastDelivered = 100;
    serverB.broadcastDelivered = 3;
    await registry.reportLoad(serverLoad({ serverId: 'srv-a', serverUrl: serverA.url, draining: true }), 60);
    await registry.reportLoad(serverLoad({ serverId: 'srv-b', serverUrl: serverB.url }), 60);
    for (let i = 0; i < 5; i++) {
      const result = await router.toTopic('news', message({ messageId: `b-${i}` }));
      assert.equal(result.delivered, 3);
    }
    assert.equal(serverA.calls.length, 0);
    const sent = serverB.calls[0]?.req as { topic?: string; messageId?: string };
    assert.deepEqual([sent.topic, sent.messageId], ['news', 'b-0']);
    assert.equal(registry.liveServerReads, 1, 'the live-server list is reused for a short while');
  });

  it('tries another server when the one it picked for a broadcast is gone', async () => {
    serverB.broadcastDelivered = 2;
    await registry.reportLoad(serverLoad({ serverId: 'srv-dead', serverUrl: await closedPortUrl() }), 60);
    await registry.reportLoad(serverLoad({ serverId: 'srv-b', serverUrl: serverB.url }), 60);
    for (let i = 0; i < 4; i++) {
      assert.equal((await router.toTopic('news', message({ messageId: `b-${i}` }))).delivered, 2);
    }
  });

  it('broadcasts to nobody when no server is live', async () => {
    const result = await router.toTopic('news', message());
    assert.equal(result.delivered, 0);
  });

  it('while Redis’s lost entries are written back, takes no answer from the registry’s silence', async () => {
    let restoring = true;
    let confirms = 0;
    router = new MessageRouter({
      locator,
      registry,
      transport,
      tracer,
      logger: silentLogger(),
      completeness: {
        now: () => Date.now(),
        confirm: () => {
          confirms++;
          return restoring
            ? Promise.reject(new RegistryIncompleteError(['srv-b'], Date.now()))
            : Promise.resolve();
        },
      },
    });
    await connect(serverA, 'phone', 'c-phone', 'alice');
    await registry.reportLoad(serverLoad({ serverId: 'srv-a', serverUrl: serverA.url }), 60);

    // A device the registry names is delivered: nothing was inferred from silence.
    assert.equal((await router.toDevice('phone', message())).outcome, 'delivered');
    assert.equal(confirms, 0);
    // Not found, a user's device list and the servers of a broadcast may all be missing entries.
    await assert.rejects(router.toDevice('ghost', message()), RegistryIncompleteError);
    await assert.rejects(router.toUser('alice', message()), RegistryIncompleteError);
    await assert.rejects(router.toTopic('news', message()), RegistryIncompleteError);
    assert.equal(confirms, 3);
    assert.equal(delivered(serverA).length, 1, 'the user fan-out sent nothing');
    assert.equal(serverA.calls.filter((c) => c.op === 'broadcast').length, 0);

    restoring = false;
    assert.equal((await router.toDevice('ghost', message())).reason, 'not_registered');
    assert.deepEqual(
      (await router.toUser('alice', message())).map((r) => r.outcome),
      ['delivered'],
    );
  });
  it('confirms a broadcast’s server list by when that list was read, reused or not, and forgets a refused one', async () => {
    let clock = 1_000;
    /** liveServers reads done when the watch's clock was read, and the time given. */
    const clockReads: { reads: number; at: number }[] = [];
    const confirms: { reads: number; readAt: number }[] = [];
    let refuse = false;
    router = new MessageRouter({
      locator,
      registry,
      transport,
      tracer,
      logger: silentLogger(),
      // Long enough that the second broadcast reuses the list on any machine.
      serversTtlMs: 60_000,
      completeness: {
        now: () => {
          clock += 10;
          clockReads.push({ reads: registry.liveServerReads, at: clock });
          return clock;
        },
        confirm: (readAt) => {
          confirms.push({ reads: registry.liveServerReads, readAt });
          return refuse ? Promise.reject(new RegistryIncompleteError(['srv-a'], clock)) : Promise.resolve();
        },
      },
    });
    serverB.broadcastDelivered = 1;
    await registry.reportLoad(serverLoad({ serverId: 'srv-b', serverUrl: serverB.url }), 60);

    assert.equal((await router.toTopic('news', message({ messageId: 't-1' }))).delivered, 1);
    // Reused: the confirm still vouches for the read it came from, not for a later moment.
    assert.equal((await router.toTopic('news', message({ messageId: 't-2' }))).delivered, 1);
    refuse = true;
    await assert.rejects(router.toTopic('news', message({ messageId: 't-3' })), RegistryIncompleteError);
    refuse = false;
    // The refused list is not reused: the next broadcast reads the servers again.
    assert.equal((await router.toTopic('news', message({ messageId: 't-4' }))).delivered, 1);

    assert.deepEqual(clockReads, [
      { reads: 0, at: 1_010 },
      { reads: 1, at: 1_020 },
    ]);
    assert.deepEqual(confirms, [
      { reads: 1, readAt: 1_010 },
      { reads: 1, readAt: 1_010 },
      { reads: 1, readAt: 1_010 },
      { reads: 2, readAt: 1_020 },
    ]);
    assert.deepEqual(
      serverB.calls
        .filter((c) => c.op === 'broadcast')
        .map((c) => (c.req as { messageId?: string }).messageId),
      ['t-1', 't-2', 't-4'],
      'the refused broadcast went nowhere',
    );
  });
});
