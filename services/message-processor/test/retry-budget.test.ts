import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DeliveryTransportError,
  DeviceLocator,
  MessageRouter,
  type DeliveryTransport,
  type OutgoingMessage,
} from '@pushline/delivery';
import type { BroadcastRequest, BroadcastResult, DeliverRequest, DeliverResult } from '@pushline/protocol';
import type { DeviceRecord, DeviceRegistry, ServerLoad } from '@pushline/registry';
import { silentLogger, trace } from '@pushline/telemetry';
import { TargetResolver } from '../src/target-resolver.ts';

// The retry budget of docs/delivery-guarantees.md ("Retry budget per path"): one failure is
// retried by one layer only. Pure logic: an in-memory registry and a transport that counts calls.

const SERVERS: ServerLoad[] = ['srv-a', 'srv-b'].map((serverId, i) => ({
  serverId,
  serverUrl: `http://127.0.0.1:${10_001 + i}`,
  deviceUrl: 'http://127.0.0.1:1',
  directUrl: 'http://127.0.0.1:1',
  connections: 1,
  eventLoopDelayMs: 0,
  rssBytes: 0,
  heapUsedBytes: 0,
  draining: false,
  at: Date.now(),
}));

const DEVICE: DeviceRecord = {
  deviceId: 'dev-1',
  userId: 'user-1',
  serverId: 'srv-a',
  serverUrl: 'http://127.0.0.1:10001',
  connectionId: 'conn-1',
  connectedAt: Date.now(),
  lastSeen: Date.now(),
};

function unused(): never {
  throw new Error('not used by the router');
}

/** Only the reads the router makes; the rest is never called. */
const registry: DeviceRegistry = {
  lookup: (deviceId) => Promise.resolve(deviceId === DEVICE.deviceId ? DEVICE : null),
  userDevices: () => Promise.resolve([DEVICE]),
  liveServers: () => Promise.resolve(SERVERS),
  register: unused,
  unregister: unused,
  lookupMany: unused,
  refresh: unused,
  clearServer: unused,
  reportLoad: unused,
  removeLoad: unused,
};

/** Fails every call with `failure` and counts the calls that reached it. */
class FailingTransport implements DeliveryTransport {
  readonly calls = { deliver: 0, broadcast: 0 };
  readonly #failure: 'server_unreachable' | 'overloaded';
  constructor(failure: 'server_unreachable' | 'overloaded') {
    this.#failure = failure;
  }
  deliver(serverUrl: string, _req: DeliverRequest): Promise<DeliverResult> {
    this.calls.deliver++;
    return Promise.reject(new DeliveryTransportError('injected', { failure: this.#failure, serverUrl }));
  }
  broadcast(serverUrl: string, _req: BroadcastRequest): Promise<BroadcastResult> {
    this.calls.broadcast++;
    return Promise.reject(new DeliveryTransportError('injected', { failure: this.#failure, serverUrl }));
  }
  replaced: DeliveryTransport['replaced'] = unused;
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function resolverOver(transport: DeliveryTransport): TargetResolver {
  const tracer = trace.getTracer('retry-budget-test');
  const router = new MessageRouter({
    locator: new DeviceLocator({ registry, tracer }),
    registry,
    transport,
    tracer,
    logger: silentLogger(),
  });
  return new TargetResolver({ router, logger: silentLogger(), maxAttempts: 3 });
}

const msg: OutgoingMessage = { messageId: 'm-1', payload: { n: 1 }, source: 'async', timeoutMs: 1000 };

describe('retry budget of the async path', () => {
  it('a broadcast whose servers are unreachable is tried once per server, by the router alone', async () => {
    const transport = new FailingTransport('server_unreachable');
    const resolution = await resolverOver(transport).deliver({ type: 'topic', id: 'news' }, msg);
    assert.deepEqual(resolution, {
      kind: 'failed',
      outcome: 'not_connected',
      reason: 'delivery_failed:server_unreachable',
    });
    // The router tries a second server; the resolver must not repeat the pair (it made 3 × 2).
    assert.equal(transport.calls.broadcast, 2);
  });

  it('a device delivery that throws is tried maxAttempts times, by the resolver alone', async () => {
    const transport = new FailingTransport('overloaded');
    const resolution = await resolverOver(transport).deliver({ type: 'device', id: DEVICE.deviceId }, msg);
    assert.deepEqual(resolution, {
      kind: 'failed',
      outcome: 'timeout',
      reason: 'delivery_failed:overloaded',
    });
    // The router passes a thrown delivery through (its re-lookup follows a stale not_connected only).
    assert.equal(transport.calls.deliver, 3);
  });
});
