import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { PushlineClient } from '@pushline/client';
import { connectionServerEnv, parseEnv } from '@pushline/config';
import { freePort } from '@pushline/devstack';
import { runCleanup, type CleanupStep } from '@pushline/runtime';
import type { Registry } from '@pushline/telemetry';
import { waitUntil, within } from '@pushline/testkit';
import { startAgentServer, startBalancer, type Balancer, type InProcessServer } from '../support/balancer.ts';
import { childServers } from '../support/child-servers.ts';
import { startPlatform, type Platform } from '../support/platform.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';

/**
 * Load-aware balancing with a real HAProxy (Debian's haproxy, configured by the generator npm start
 * and docker-compose use) in front of real connection servers, whose load agents set each server's
 * weight and state; devices are the SDK's clients connecting to the one balancer URL.
 */

let platform: Platform;
let cleanup: CleanupStep[];

beforeEach(async () => {
  platform = await startPlatform('lb', { servers: 0, processor: false });
  cleanup = [];
});

afterEach(async () => {
  await runCleanup([...cleanup.reverse(), { name: 'platform', run: () => platform.close() }]);
});

function defer(name: string, run: () => unknown): void {
  cleanup.push({ name, run: async () => void (await run()) });
}

async function server(name: string, env: Record<string, string> = {}): Promise<InProcessServer> {
  const s = await startAgentServer(platform, name, env);
  defer(name, () => s.assembled.close());
  return s;
}

async function balancer(
  servers: readonly InProcessServer[],
  options: { agentInterMs?: number; checkInterMs?: number } = {},
): Promise<Balancer> {
  const lb = await startBalancer(
    servers.map((s) => s.balanced),
    options,
  );
  defer('haproxy', () => lb.stop());
  for (const s of servers) await lb.until(s.serverId, (st) => st.status === 'UP', 'UP');
  return lb;
}

/** A device built on the SDK; it follows reconnect hints and retries with backoff. */
function device(id: string, url: string): PushlineClient {
  const client = new PushlineClient({
    url,
    token: () =>
      new SignJWT({ uid: `user-${id}` })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(id)
        .setExpirationTime('10m')
        .sign(new TextEncoder().encode(platform.jwtSecret)),
    reconnect: { initialDelayMs: 300, maxDelayMs: 2_000 },
  });
  defer(`device ${id}`, () => client.close());
  client.connect();
  return client;
}

/** The server each device is registered on now (undefined when it is not registered). */
async function whereRegistered(ids: readonly string[]): Promise<(string | undefined)[]> {
  const records = await platform.registry.lookupMany(ids);
  return records.map((r) => r?.serverId);
}

/** Connects devices one after another through `url`; resolves with the server each registered on. */
async function connectInTurn(ids: readonly string[], url: string): Promise<string[]> {
  const landed: string[] = [];
  for (const id of ids) {
    const client = device(id, url);
    await within(client.whenConnected(), 10_000, `${id} to connect`);
    landed.push(
      await waitUntil(async () => (await whereRegistered([id]))[0], { what: `${id} to be registered` }),
    );
  }
  return landed;
}

const count = (values: readonly (string | undefined)[], of: string) => values.filter((v) => v === of).length;

async function metric(metrics: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const data = await metrics.getSingleMetric(name)?.get();
  return (data?.values ?? [])
    .filter((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want))
    .reduce((sum, v) => sum + v.value, 0);
}

const ids = (label: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${platform.prefix}-${label}-${i}`);

describe('HAProxy with load agents', () => {
  it('sends new devices to the server with more spare capacity, which HAProxy cannot count itself', async () => {
    // Connections are the dimension under test: the lag ceiling is set out of reach, since both
    // servers share this process's event loop and a loaded runner would weigh B down with it.
    const sized = { PUSHLINE_MAX_CONNECTIONS: '100', PUSHLINE_MAX_EVENT_LOOP_LAG_MS: '600000' };
    const a = await server('a', sized);
    const b = await server('b', sized);
    const lb = await balancer([a, b]);

    // 75 devices connect to A directly: HAProxy's own connection counts say both are empty.
    const direct = ids('direct', 75);
    for (const id of direct) device(id, a.assembled.server.deviceUrl);
    await waitUntil(async () => count(await whereRegistered(direct), a.serverId) === direct.length, {
      what: 'the direct devices on A',
    });
    const weighted = await lb.until(a.serverId, (s) => s.weight <= 30, 'weighted down to its spare 25%');
    assert.equal(weighted.status, 'UP');
    assert.ok(((await lb.stats()).get(b.serverId)?.weight ?? 0) >= 80, 'B keeps (about) its full weight');

    const landed = await connectInTurn(ids('lb', 30), lb.url);
    const onA = count(landed, a.serverId);
    const onB = count(landed, b.serverId);
    assert.equal(onA + onB, 30, `every device landed on A or B: ${landed.join(', ')}`);
    // Plain leastconn would split them 15/15; the weights make it roughly 24/6.
    assert.ok(onB >= 2 * onA, `B got ${onB} and A ${onA} of the new devices`);
    assert.equal(a.assembled.server.connectionCount, 75 + onA);
  });

  it('answers drain before the first reconnect hint: its devices land on the others, none come back', async () => {
    const a = await server('a');
    const b = await server('b');
    // HAProxy asks less often than devices come back (drain window 500 ms, grace 200 ms): without
    // waiting for it to read `drain`, most of them would be sent back to A and refused.
    const lb = await balancer([a, b], { agentInterMs: 1_000, checkInterMs: 1_000 });
    const devices = ids('d', 20);
    for (const id of devices) device(id, lb.url);
    const before = await waitUntil(
      async () => {
        const where = await whereRegistered(devices);
        return where.every((w) => w !== undefined) ? where : undefined;
      },
      { what: 'every device registered' },
    );
    const onA = count(before, a.serverId);
    assert.ok(onA > 0 && onA < devices.length, `leastconn spread them: ${onA} of ${devices.length} on A`);
    const connectsBefore = await metric(a.assembled.metrics, 'pushline_connects_total');

    // SIGTERM's path: the assembled server's close() drains.
    await a.assembled.close();

    await waitUntil(async () => count(await whereRegistered(devices), b.serverId) === devices.length, {
      timeoutMs: 15_000,
      what: 'every device registered on B',
    });
    assert.equal(
      await metric(a.assembled.metrics, 'pushline_auth_failures_total', { code: 'server_draining' }),
      0,
      'HAProxy sent no reconnecting device back to the draining server',
    );
    assert.equal(await metric(a.assembled.metrics, 'pushline_connects_total'), connectsBefore);
    assert.equal(await metric(a.assembled.metrics, 'pushline_reconnect_hints_total'), onA);
  });

  it('takes no new devices to a draining server', async () => {
    const a = await server('a');
    const b = await server('b');
    const lb = await balancer([a, b]);

    await a.assembled.agent.drain();
    const seen = await lb.stats();
    assert.match(seen.get(a.serverId)?.status ?? '', /^DRAIN/, 'HAProxy read drain before drain() resolved');

    const landed = await connectInTurn(ids('new', 10), lb.url);
    assert.equal(count(landed, b.serverId), 10);
    assert.equal(a.assembled.server.connectionCount, 0);
    assert.equal(await metric(a.assembled.metrics, 'pushline_connects_total'), 0);
  });

  it('takes no new devices to a server that cannot reach the registry, and takes them again after', async () => {
    const { hostname, port } = new URL(platform.serviceEnv['PUSHLINE_REDIS_URL'] ?? '');
    const proxy = await startTcpProxy({ host: hostname, port: Number(port) });
    // Healed before the servers close, so B's shutdown can reach Redis.
    defer('redis proxy', () => proxy.close());
    const a = await server('a');
    const b = await server('b', { PUSHLINE_REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    defer('heal', () => proxy.heal());
    const lb = await balancer([a, b]);

    proxy.partition();
    await lb.until(b.serverId, (s) => s.status.startsWith('DOWN'), 'DOWN once its agent says down');
    const landed = await connectInTurn(ids('while-down', 10), lb.url);
    assert.equal(count(landed, a.serverId), 10, `all on A: ${landed.join(', ')}`);
    assert.equal(await metric(b.assembled.metrics, 'pushline_connects_total'), 0);
    assert.ok((await metric(b.assembled.metrics, 'pushline_lb_agent_checks_total', { reply: 'down' })) > 0);

    proxy.heal();
    await lb.until(b.serverId, (s) => s.status === 'UP', 'UP again');
    // leastconn: A holds 10, B none.
    assert.deepEqual(await connectInTurn(ids('after', 1), lb.url), [b.serverId]);
  });

  it('loses no registration when a server is killed under a few hundred devices', async () => {
    const children = childServers(platform);
    defer('child servers', () => children.close());
    const started = await Promise.all(
      ['k1', 'k2', 'k3'].map(async (name) => {
        const agentPort = await freePort();
        const child = await children.start(name, { PUSHLINE_AGENT_PORT: String(agentPort) });
        const config = parseEnv(connectionServerEnv, {
          ...platform.serviceEnv,
          PUSHLINE_PORT: new URL(child.deviceUrl).port,
          PUSHLINE_INTERNAL_PORT: new URL(child.internalUrl).port,
          PUSHLINE_AGENT_PORT: String(agentPort),
        });
        return { child, balanced: { name: child.serverId, host: '127.0.0.1', config } };
      }),
    );
    const lb = await startBalancer(started.map((s) => s.balanced));
    defer('haproxy', () => lb.stop());
    for (const s of started) await lb.until(s.child.serverId, (st) => st.status === 'UP', 'UP');

    const devices = ids('storm', 300);
    const clients = devices.map((id) => device(id, lb.url));
    const registered = async (where: (serverId: string | undefined) => boolean) =>
      (await whereRegistered(devices)).every(where);
    const live = new Set(started.map((s) => s.child.serverId));
    await waitUntil(() => registered((w) => w !== undefined && live.has(w)), {
      timeoutMs: 30_000,
      intervalMs: 100,
      what: 'all 300 devices registered',
    });
    const before = await whereRegistered(devices);
    const victim = started
      .map((s) => ({ s, held: count(before, s.child.serverId) }))
      .sort((x, y) => y.held - x.held)[0];
    assert.ok(victim && victim.held > 50, `the killed server holds a share of the devices (${victim?.held})`);

    victim.s.child.kill();
    live.delete(victim.s.child.serverId);
    await waitUntil(() => registered((w) => w !== undefined && live.has(w)), {
      timeoutMs: 45_000,
      intervalMs: 100,
      what: `the ${victim.held} devices of the killed server registered on a survivor`,
    });
    assert.ok(clients.every((c) => c.state === 'connected'));
    // The survivors' own devices kept their registration throughout.
    const after = await whereRegistered(devices);
    before.forEach((was, i) => {
      if (was !== victim.s.child.serverId) assert.equal(after[i], was, `${devices[i]} stayed put`);
    });
    await lb.until(victim.s.child.serverId, (s) => s.status.startsWith('DOWN'), 'DOWN');
  });
});
