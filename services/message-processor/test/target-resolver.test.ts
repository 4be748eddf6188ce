import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import {
  DeliveryTransportError,
  DeviceLocator,
  InternalAuthError,
  MessageRouter,
  type DeliveryTransport,
  type OutgoingMessage,
  type TransportFailure,
} from '@pushline/delivery';
import type {
  BroadcastRequest,
  BroadcastResult,
  DeliverRequest,
  DeliverResult,
  PushTarget,
  ReplacedResult,
} from '@pushline/protocol';
import { RedisDeviceRegistry, type RedisClient } from '@pushline/registry';
import { createLogger, trace } from '@pushline/telemetry';
import { testRedis, uniquePrefix } from '@pushline/testkit';
import { TargetResolver } from '../src/target-resolver.ts';

/** What the scripted server does with one call: answer, or throw. */
type Step = DeliverResult | BroadcastResult | Error;

/**
 * The connection servers, scripted per server URL (and device): each call takes the next step of
 * its script, and the last step repeats. The resolver's job is what it makes of these answers,
 * so the servers themselves are played here; the registry under the router is the real Redis.
 */
class ScriptedServers implements DeliveryTransport {
  readonly calls: string[] = [];
  readonly #scripts = new Map<string, Step[]>();

  script(key: string, ...steps: Step[]): void {
    this.#scripts.set(key, steps);
  }

  #next(key: string): Step {
    this.calls.push(key);
    const steps = this.#scripts.get(key);
    if (!steps || steps.length === 0) throw new Error(`no script for ${key}`);
    return steps.length > 1 ? (steps.shift() as Step) : (steps[0] as Step);
  }

  deliver(serverUrl: string, req: DeliverRequest): Promise<DeliverResult> {
    const step = this.#next(`${serverUrl} ${req.deviceId}`);
    return step instanceof Error ? Promise.reject(step) : Promise.resolve(step as DeliverResult);
  }

  broadcast(serverUrl: string, req: BroadcastRequest): Promise<BroadcastResult> {
    const step = this.#next(`${serverUrl} topic:${req.topic}`);
    return step instanceof Error ? Promise.reject(step) : Promise.resolve(step as BroadcastResult);
  }

  replaced(): Promise<ReplacedResult> {
    return Promise.resolve({ closed: false });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

const SERVER_A = 'http://127.0.0.1:1';
const SERVER_B = 'http://127.0.0.1:2';

function transportError(failure: TransportFailure, serverUrl = SERVER_A): DeliveryTransportError {
  return new DeliveryTransportError(`scripted ${failure}`, { failure, serverUrl });
}

const delivered: DeliverResult = { outcome: 'delivered', latencyMs: 1 };
const message: OutgoingMessage = { messageId: 'm-1', payload: { n: 1 }, source: 'async', timeoutMs: 1_000 };

describe('TargetResolver', () => {
  let redis: RedisClient;
  before(() => {
    redis = testRedis();
  });
  after(async () => {
    await redis.quit();
  });

  interface World {
    readonly resolver: TargetResolver;
    readonly servers: ScriptedServers;
    readonly registry: RedisDeviceRegistry;
    readonly logged: { level: string; msg: string; deviceId?: string; attempt?: number }[];
    connect(deviceId: string, userId: string, serverUrl?: string): Promise<void>;
    liveServer(serverId: string, serverUrl: string): Promise<void>;
  }

  function world(label: string, maxAttempts = 3): World {
    const registry = new RedisDeviceRegistry({ redis, keyPrefix: `${uniquePrefix(label)}:` });
    const servers = new ScriptedServers();
    const logged: World['logged'] = [];
    const logger = createLogger({
      service: 'target-resolver-test',
      level: 'warn',
      destination: new Writable({
        write(chunk: Buffer, _encoding, done) {
          for (const line of chunk.toString('utf8').split('\n').filter(Boolean))
            logged.push(JSON.parse(line) as World['logged'][number]);
          done();
        },
      }),
    });
    const router = new MessageRouter({
      locator: new DeviceLocator({ registry }),
      registry,
      transport: servers,
      tracer: trace.getTracer('target-resolver-test'),
      logger,
    });
    return {
      resolver: new TargetResolver({ router, logger, maxAttempts }),
      servers,
      registry,
      logged,
      async connect(deviceId, userId, serverUrl = SERVER_A) {
        await registry.register(
          {
            deviceId,
            userId,
            serverId: serverUrl === SERVER_A ? 'srv-a' : 'srv-b',
            serverUrl,
            connectionId: `conn-${deviceId}`,
            connectedAt: Date.now(),
            lastSeen: Date.now(),
          },
          60,
        );
      },
      async liveServer(serverId, serverUrl) {
        await registry.reportLoad(
          {
            serverId,
            serverUrl,
            deviceUrl: serverUrl,
            directUrl: serverUrl,
            connections: 0,
            eventLoopDelayMs: 0,
            rssBytes: 0,
            heapUsedBytes: 0,
            draining: false,
            at: Date.now(),
          },
          60,
        );
      },
    };
  }

  const device = (id: string): PushTarget => ({ type: 'device', id });
  const user = (id: string): PushTarget => ({ type: 'user', id });
  const topic = (id: string): PushTarget => ({ type: 'topic', id });

  describe('a device', () => {
    it('gives the device outcome of the first answer, asking once', async () => {
      const w = world('tr-device-ok');
      await w.connect('dev-1', 'u-1');
      w.servers.script(`${SERVER_A} dev-1`, delivered);
      const resolution = await w.resolver.deliver(device('dev-1'), message);
      assert.equal(resolution.kind, 'devices');
      assert.deepEqual(
        resolution.kind === 'devices'
          ? resolution.results.map((r) => [r.deviceId, r.outcome, r.serverId])
          : [],
        [['dev-1', 'delivered', 'srv-a']],
      );
      assert.equal(w.servers.calls.length, 1);
    });

    for (const outcome of ['not_connected', 'timeout', 'rejected'] as const) {
      it(`never retries a device outcome (${outcome})`, async () => {
        const w = world(`tr-device-${outcome}`);
        await w.connect('dev-1', 'u-1');
        w.servers.script(`${SERVER_A} dev-1`, { outcome, latencyMs: 0, reason: 'scripted' });
        const resolution = await w.resolver.deliver(device('dev-1'), message);
        assert.equal(
          resolution.kind === 'devices' ? resolution.results[0]?.outcome : resolution.kind,
          outcome,
        );
        assert.equal(w.servers.calls.length, 1);
      });
    }

    it('answers not_connected without asking any server for a device that is not registered', async () => {
      const w = world('tr-device-absent');
      const resolution = await w.resolver.deliver(device('nobody'), message);
      assert.deepEqual(resolution.kind === 'devices' ? resolution.results : [], [
        { outcome: 'not_connected', reason: 'not_registered', latencyMs: 0, deviceId: 'nobody', attempts: 1 },
      ]);
      assert.deepEqual(w.servers.calls, []);
    });

    it('tries again after answers outside the contract, and gives the answer that came', async () => {
      const w = world('tr-device-retry');
      await w.connect('dev-1', 'u-1');
      w.servers.script(
        `${SERVER_A} dev-1`,
        transportError('invalid_response'),
        transportError('server_error'),
        delivered,
      );
      const resolution = await w.resolver.deliver(device('dev-1'), message);
      assert.equal(
        resolution.kind === 'devices' ? resolution.results[0]?.outcome : resolution.kind,
        'delivered',
      );
      assert.equal(w.servers.calls.length, 3);
      assert.equal(w.logged.filter((l) => l.msg === 'delivery through a connection server failed').length, 2);
    });

    const spent = [
      ['server_error', 'timeout'],
      ['server_lost', 'timeout'],
      ['server_timeout', 'timeout'],
      ['invalid_response', 'timeout'],
      ['overloaded', 'timeout'],
      // Only a call that never left is known not delivered.
      ['server_unreachable', 'not_connected'],
    ] as const;
    for (const [failure, outcome] of spent) {
      it(`reports ${failure} on every try as failed with outcome ${outcome}, after maxAttempts`, async () => {
        const w = world(`tr-device-${failure}`, 2);
        await w.connect('dev-1', 'u-1');
        w.servers.script(`${SERVER_A} dev-1`, transportError(failure));
        const resolution = await w.resolver.deliver(device('dev-1'), message);
        assert.deepEqual(resolution, { kind: 'failed', outcome, reason: `delivery_failed:${failure}` });
        assert.equal(w.servers.calls.length, 2);
      });
    }

    it('logs a refused internal token as an error, not as a device outcome', async () => {
      const w = world('tr-device-auth', 1);
      await w.connect('dev-1', 'u-1');
      w.servers.script(`${SERVER_A} dev-1`, new InternalAuthError(SERVER_A));
      const resolution = await w.resolver.deliver(device('dev-1'), message);
      assert.deepEqual(resolution, {
        kind: 'failed',
        outcome: 'timeout',
        reason: 'delivery_failed:unauthorized',
      });
      await new Promise<void>((resolve) => setImmediate(resolve));
      assert.deepEqual(
        w.logged.map((l) => [l.level, l.msg]),
        [['error', 'a connection server rejected the internal token']],
      );
    });

    it('throws an error that is not the transport, without retrying', async () => {
      const w = world('tr-device-bug');
      await w.connect('dev-1', 'u-1');
      w.servers.script(`${SERVER_A} dev-1`, new TypeError('a bug'));
      await assert.rejects(w.resolver.deliver(device('dev-1'), message), TypeError);
      assert.equal(w.servers.calls.length, 1);
    });
  });

  describe('a user', () => {
    it('gives one result per connected device, and none for a user without devices', async () => {
      const w = world('tr-user-ok');
      await w.connect('dev-1', 'u-1');
      await w.connect('dev-2', 'u-1', SERVER_B);
      w.servers.script(`${SERVER_A} dev-1`, delivered);
      w.servers.script(`${SERVER_B} dev-2`, { outcome: 'rejected', latencyMs: 0, reason: 'nope' });
      const resolution = await w.resolver.deliver(user('u-1'), message);
      assert.deepEqual(
        resolution.kind === 'devices'
          ? resolution.results.map((r) => `${r.deviceId} ${r.outcome}`).sort()
          : [],
        ['dev-1 delivered', 'dev-2 rejected'],
      );
      assert.deepEqual(await w.resolver.deliver(user('u-nobody'), message), { kind: 'devices', results: [] });
    });

    it('retries only the devices whose delivery failed, and gives every device an outcome', async () => {
      const w = world('tr-user-partial', 3);
      await w.connect('dev-ok', 'u-1');
      await w.connect('dev-flaky', 'u-1');
      await w.connect('dev-broken', 'u-1', SERVER_B);
      w.servers.script(`${SERVER_A} dev-ok`, delivered);
      w.servers.script(`${SERVER_A} dev-flaky`, transportError('server_error'), delivered);
      w.servers.script(`${SERVER_B} dev-broken`, transportError('server_lost', SERVER_B));
      const resolution = await w.resolver.deliver(user('u-1'), message);
      assert.equal(resolution.kind, 'devices');
      const byDevice = new Map(
        resolution.kind === 'devices' ? resolution.results.map((r) => [r.deviceId, r]) : [],
      );
      assert.equal(byDevice.size, 3);
      assert.equal(byDevice.get('dev-ok')?.outcome, 'delivered');
      assert.equal(byDevice.get('dev-flaky')?.outcome, 'delivered');
      assert.deepEqual(byDevice.get('dev-broken'), {
        deviceId: 'dev-broken',
        outcome: 'timeout',
        reason: 'delivery_failed:server_lost',
        latencyMs: 0,
        attempts: 3,
      });
      const count = (key: string) => w.servers.calls.filter((c) => c === key).length;
      assert.equal(count(`${SERVER_A} dev-ok`), 1, 'a device that answered is not asked again');
      assert.equal(count(`${SERVER_A} dev-flaky`), 2);
      assert.equal(count(`${SERVER_B} dev-broken`), 3);
    });

    it('marks a device whose server was never reached not_connected', async () => {
      const w = world('tr-user-unreachable', 2);
      await w.connect('dev-1', 'u-1');
      w.servers.script(`${SERVER_A} dev-1`, transportError('server_unreachable'));
      const resolution = await w.resolver.deliver(user('u-1'), message);
      assert.deepEqual(
        resolution.kind === 'devices' ? resolution.results.map((r) => [r.outcome, r.reason]) : [],
        [['not_connected', 'delivery_failed:server_unreachable']],
      );
    });

    it('throws when one device failed with something other than the transport', async () => {
      const w = world('tr-user-bug');
      await w.connect('dev-1', 'u-1');
      await w.connect('dev-2', 'u-1');
      w.servers.script(`${SERVER_A} dev-1`, delivered);
      w.servers.script(`${SERVER_A} dev-2`, new RangeError('a bug'));
      await assert.rejects(w.resolver.deliver(user('u-1'), message), RangeError);
    });
  });

  describe('a topic', () => {
    it('broadcasts once through a live server and gives its count', async () => {
      const w = world('tr-topic-ok');
      await w.liveServer('srv-a', SERVER_A);
      w.servers.script(`${SERVER_A} topic:news`, { delivered: 4, latencyMs: 2 });
      const resolution = await w.resolver.deliver(topic('news'), message);
      assert.deepEqual(resolution, { kind: 'topic', result: { delivered: 4, latencyMs: 2 } });
      assert.equal(w.servers.calls.length, 1);
    });

    it('reaches nobody, without failing, when no server is live', async () => {
      const w = world('tr-topic-none');
      const resolution = await w.resolver.deliver(topic('news'), message);
      assert.equal(resolution.kind, 'topic');
      assert.equal(resolution.kind === 'topic' ? resolution.result.delivered : -1, 0);
      assert.deepEqual(w.servers.calls, []);
    });

    for (const failure of ['server_lost', 'server_timeout', 'server_error'] as const) {
      it(`never sends a broadcast again after ${failure}: subscribers may have it`, async () => {
        const w = world(`tr-topic-${failure}`, 3);
        await w.liveServer('srv-a', SERVER_A);
        w.servers.script(`${SERVER_A} topic:news`, transportError(failure), { delivered: 1, latencyMs: 0 });
        const resolution = await w.resolver.deliver(topic('news'), message);
        assert.deepEqual(resolution, {
          kind: 'failed',
          outcome: 'timeout',
          reason: `delivery_failed:${failure}`,
        });
        assert.equal(w.servers.calls.length, 1);
      });
    }

    it('leaves a broadcast that never left to the router, and reports not_connected when none ever did', async () => {
      const w = world('tr-topic-unreachable', 2);
      await w.liveServer('srv-a', SERVER_A);
      await w.liveServer('srv-b', SERVER_B);
      w.servers.script(`${SERVER_A} topic:news`, transportError('server_unreachable'));
      w.servers.script(`${SERVER_B} topic:news`, transportError('server_unreachable', SERVER_B));
      const resolution = await w.resolver.deliver(topic('news'), message);
      assert.deepEqual(resolution, {
        kind: 'failed',
        outcome: 'not_connected',
        reason: 'delivery_failed:server_unreachable',
      });
      // The router tries each live server once; the resolver does not try the broadcast again
      // (one layer owns each retry: docs/delivery-guarantees.md, "Retry budget per path").
      assert.equal(w.servers.calls.length, 2);
    });
  });
});
