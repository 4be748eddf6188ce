import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { silentLogger } from '@pushline/telemetry';
import { waitUntil } from '@pushline/testkit';
import {
  DependencyError,
  DependencyGate,
  isRedisUnavailableError,
  type Dependency,
} from '../src/dependency-gate.ts';

/** Whether each dependency is up; the registry is complete unless a test says otherwise. */
type Flags = Omit<Record<Dependency, boolean>, 'registry'> & { registry?: boolean };

/** Probes whose answers the test sets: a dependency is up while its flag is. */
function probes(up: Flags): Record<Dependency, () => Promise<unknown>> {
  return {
    redis: () => (up.redis ? Promise.resolve('PONG') : Promise.reject(new Error('redis down'))),
    kafka: () => (up.kafka ? Promise.resolve() : Promise.reject(new Error('kafka down'))),
    registry: () =>
      up.registry === false ? Promise.reject(new Error('registry restoring')) : Promise.resolve(),
  };
}

describe('DependencyGate', () => {
  const gates: DependencyGate[] = [];
  afterEach(() => {
    for (const gate of gates.splice(0)) gate.close();
  });

  function gate(up: Flags, changes: string[] = [], failures: Dependency[] = []): DependencyGate {
    const g = new DependencyGate({
      probes: probes(up),
      probeTimeoutMs: 200,
      watchIntervalMs: 20,
      logger: silentLogger(),
      onChange: (dependency, isUp) => changes.push(`${dependency} ${isUp ? 'up' : 'down'}`),
      onProbeFailure: (dependency) => failures.push(dependency),
    });
    gates.push(g);
    return g;
  }

  it('starts open, and whenOpen resolves at once', async () => {
    const g = gate({ redis: true, kafka: true });
    assert.equal(g.isOpen(), true);
    assert.deepEqual(g.downSince(), {});
    await g.whenOpen(new AbortController().signal);
  });

  it('closes when a call fails, and reopens by itself once a probe answers', async () => {
    const up = { redis: true, kafka: false };
    const changes: string[] = [];
    const g = gate(up, changes);
    g.down('kafka', new Error('produce failed'));
    assert.equal(g.isOpen(), false);
    assert.equal(g.isUp('kafka'), false);
    assert.equal(g.isUp('redis'), true);
    assert.deepEqual(Object.keys(g.downSince()), ['kafka']);
    const waiting = g.whenOpen(new AbortController().signal);
    up.kafka = true;
    await waiting;
    assert.equal(g.isOpen(), true);
    assert.deepEqual(changes, ['kafka down', 'kafka up']);
  });

  it('reports a dependency down once, however many calls fail', () => {
    const changes: string[] = [];
    const g = gate({ redis: false, kafka: true }, changes);
    g.down('redis', new Error('one'));
    g.down('redis', 'two');
    g.down('redis', new Error('three'));
    assert.deepEqual(changes, ['redis down']);
  });

  it('stays closed while either dependency is down', async () => {
    const up = { redis: false, kafka: false };
    const g = gate(up);
    g.down('redis', new Error('x'));
    g.down('kafka', new Error('y'));
    up.kafka = true;
    await waitUntil(() => g.isUp('kafka'), { what: 'kafka back' });
    assert.equal(g.isOpen(), false, 'redis is still down');
    up.redis = true;
    await waitUntil(() => g.isOpen(), { what: 'both back' });
  });

  it('opens at once on a successful call (up), without waiting for a probe', () => {
    const changes: string[] = [];
    const g = gate({ redis: false, kafka: true }, changes);
    g.down('redis', new Error('x'));
    g.up('redis');
    assert.equal(g.isOpen(), true);
    g.up('redis');
    assert.deepEqual(changes, ['redis down', 'redis up'], 'up on an open gate changes nothing');
  });

  it('rejects a waiter whose signal aborts, with the signal reason', async () => {
    const g = gate({ redis: false, kafka: true });
    g.down('redis', new Error('x'));
    const controller = new AbortController();
    const waiting = g.whenOpen(controller.signal);
    const reason = new Error('record revoked');
    controller.abort(reason);
    await assert.rejects(waiting, (err: unknown) => err === reason);
  });

  it('releases waiters on close, and ignores failures after it', async () => {
    const changes: string[] = [];
    const g = gate({ redis: false, kafka: true }, changes);
    g.down('redis', new Error('x'));
    const waiting = g.whenOpen(new AbortController().signal);
    g.close();
    await waiting;
    g.down('kafka', new Error('after close'));
    assert.equal(g.isUp('kafka'), true);
    assert.deepEqual(changes, ['redis down']);
  });

  it('check probes now: true and open when it answers, false and closed when not', async () => {
    const up = { redis: true, kafka: true };
    const failures: Dependency[] = [];
    const g = gate(up, [], failures);
    assert.equal(await g.check('kafka'), true);
    up.kafka = false;
    assert.equal(await g.check('kafka'), false);
    assert.equal(g.isUp('kafka'), false);
    assert.ok(failures.includes('kafka'));
    up.kafka = true;
    assert.equal(await g.check('kafka'), true);
    assert.equal(g.isUp('kafka'), true);
  });

  it('counts a probe that never answers as failed', async () => {
    const g = new DependencyGate({
      probes: {
        redis: () => new Promise<never>(() => {}),
        kafka: () => Promise.resolve(),
        registry: () => Promise.resolve(),
      },
      probeTimeoutMs: 20,
      logger: silentLogger(),
    });
    gates.push(g);
    assert.equal(await g.check('redis'), false);
    assert.equal(g.isUp('redis'), false);
  });

  it('notices a Redis that stops answering through its watch, while no call fails', async () => {
    const up = { redis: true, kafka: true };
    const changes: string[] = [];
    const g = gate(up, changes);
    g.start();
    up.redis = false;
    await waitUntil(() => !g.isUp('redis'), { what: 'the watch saw redis down' });
    up.redis = true;
    await waitUntil(() => g.isUp('redis'), { what: 'redis back' });
    assert.deepEqual(changes.slice(0, 2), ['redis down', 'redis up']);
  });
});

describe('DependencyError', () => {
  it('names the dependency and keeps the cause', () => {
    const cause = new Error('ECONNREFUSED');
    const err = new DependencyError('redis', cause);
    assert.equal(err.name, 'DependencyError');
    assert.equal(err.dependency, 'redis');
    assert.equal(err.cause, cause);
    assert.equal(err.message, 'redis failed: ECONNREFUSED');
    assert.equal(new DependencyError('kafka', 'plain').message, 'kafka failed: plain');
  });
});

describe('isRedisUnavailableError', () => {
  function withCode(code: string): Error {
    return Object.assign(new Error(`connect ${code}`), { code });
  }
  function named(name: string, message: string): Error {
    const err = new Error(message);
    err.name = name;
    return err;
  }

  const rows: readonly [string, unknown, boolean][] = [
    ['a refused connection', withCode('ECONNREFUSED'), true],
    ['a reset connection', withCode('ECONNRESET'), true],
    ['a timed-out connect', withCode('ETIMEDOUT'), true],
    ['a broken pipe', withCode('EPIPE'), true],
    ['an unreachable host', withCode('EHOSTUNREACH'), true],
    ['retries spent', named('MaxRetriesPerRequestError', 'Reached the max retries per request limit'), true],
    ['a Redis still loading', named('ReplyError', 'LOADING Redis is loading the dataset in memory'), true],
    ['a busy script', named('ReplyError', 'BUSY Redis is busy running a script'), true],
    [
      'a read-only replica',
      named('ReplyError', "READONLY You can't write against a read only replica."),
      true,
    ],
    ['a cluster that is down', named('ReplyError', 'CLUSTERDOWN The cluster is down'), true],
    [
      'a cluster asking to try again',
      named('ReplyError', 'TRYAGAIN Multiple keys request during rehashing'),
      true,
    ],
    ['a closed connection', new Error('Connection is closed.'), true],
    [
      'an unwritable stream',
      new Error("Stream isn't writeable and enableOfflineQueue options is false"),
      true,
    ],
    ['a command timeout', new Error('Command timed out'), true],
    [
      'a wrong type on a key (the command is at fault)',
      named('ReplyError', 'WRONGTYPE Operation against a key'),
      false,
    ],
    ['a script error', named('ReplyError', 'ERR Error running script'), false],
    ['an unrelated code', withCode('ENOENT'), false],
    ['a plain error', new Error('boom'), false],
    ['a string', 'ECONNREFUSED', false],
    ['undefined', undefined, false],
  ];
  for (const [label, err, expected] of rows) {
    it(`${expected ? 'recognises' : 'does not take'} ${label}`, () => {
      assert.equal(isRedisUnavailableError(err), expected);
    });
  }
});
