import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { agentReply, assessLoad, type CapacityLimits, type LoadSample } from '@pushline/connection-server';
import { parsePrometheusText, sumSamples } from '@pushline/telemetry';
import { waitUntil, within } from '@pushline/testkit';
import { createWorld, type TestWorld } from './helpers.ts';

const limits: CapacityLimits = { maxConnections: 1000, maxPendingHandshakes: 400, maxEventLoopLagMs: 520 };
const idle: LoadSample = {
  connections: 0,
  pendingHandshakes: 0,
  eventLoopLagMs: 10,
  ready: true,
  wasReady: true,
  registryReachable: true,
  draining: false,
};
const reply = (sample: Partial<LoadSample>) => agentReply(assessLoad({ ...idle, ...sample }, limits));

describe('assessLoad and agentReply (the agent-check line)', () => {
  it('gives an idle server its full weight, and says up and ready so it lifts an earlier down or drain', () => {
    assert.equal(reply({}), 'up ready 100%');
    assert.deepEqual(assessLoad(idle, limits), {
      state: 'ready',
      utilization: 0,
      limitedBy: 'connections',
      weightPercent: 100,
    });
  });

  it('weighs the most used dimension: connections, pending handshakes or event-loop lag', () => {
    assert.equal(reply({ connections: 250 }), 'up ready 75%');
    assert.equal(reply({ connections: 250, pendingHandshakes: 200 }), 'up ready 50%');
    // Lag above the 20 ms an idle loop shows: (270 - 20) / (520 - 20) = 0.5.
    assert.equal(reply({ connections: 100, eventLoopLagMs: 270 }), 'up ready 50%');
    const a = assessLoad({ ...idle, connections: 100, pendingHandshakes: 100, eventLoopLagMs: 395 }, limits);
    assert.deepEqual([a.utilization, a.limitedBy], [0.75, 'event_loop']);
  });

  it('answers 0% at the connection maximum, but never less than 1% for lag or handshakes alone', () => {
    assert.equal(reply({ connections: 1000 }), 'up ready 0%');
    assert.equal(reply({ connections: 5000 }), 'up ready 0%');
    assert.equal(reply({ eventLoopLagMs: 5_000 }), 'up ready 1%');
    assert.equal(reply({ pendingHandshakes: 400 }), 'up ready 1%');
    assert.equal(reply({ connections: 999 }), 'up ready 1%');
  });

  it('says drain while draining, whatever else holds', () => {
    assert.equal(reply({ draining: true }), 'drain');
    assert.equal(reply({ draining: true, ready: false, registryReachable: false }), 'drain');
  });

  it('says down with the reason as a word of its own when not ready', () => {
    assert.equal(reply({ ready: false, wasReady: false }), 'down #starting');
    assert.equal(reply({ ready: false }), 'down #not_ready');
    assert.equal(reply({ registryReachable: false }), 'down #registry_unreachable');
  });

  it('keeps measuring use when the server is not taking devices (the scale signal does not drop to 0)', () => {
    assert.equal(assessLoad({ ...idle, connections: 600, draining: true }, limits).utilization, 0.6);
    assert.equal(assessLoad({ ...idle, connections: 600, ready: false }, limits).utilization, 0.6);
  });
});

/** Opens the agent port like HAProxy does and resolves with what the agent wrote before closing. */
function check(port: number): Promise<string> {
  return within(
    new Promise<string>((resolve, reject) => {
      let text = '';
      const socket = connect({ host: '127.0.0.1', port });
      socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
      socket.on('end', () => {
        socket.end();
        resolve(text);
      });
      socket.on('error', reject);
    }),
    5_000,
    'the agent to answer',
  );
}

describe('the load agent of a running connection server', () => {
  let world: TestWorld;
  before(async () => {
    world = await createWorld('load-agent');
  });
  after(() => world.close());

  it('answers each check with one line from its live load, and drain from the start of a drain', async () => {
    const { server, agent, metrics } = await world.startServer({
      env: { PUSHLINE_AGENT_PORT: '0', PUSHLINE_MAX_CONNECTIONS: '4' },
    });
    const port = agent.port;
    assert.ok(port !== undefined && port > 0);
    assert.match(await check(port), /^up ready (100|9\d)%\n$/);

    await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    await waitUntil(() => server.connectionCount === 1);
    const line = await check(port);
    const weight = Number(/^up ready (\d+)%\n$/.exec(line)?.[1]);
    assert.ok(weight <= 75 && weight >= 50, `one device of four leaves about 75%: ${line}`);

    const text = await metrics.metrics();
    const families = parsePrometheusText(text);
    assert.ok(sumSamples(families, 'pushline_capacity_utilization') >= 0.25);
    assert.ok(sumSamples(families, 'pushline_lb_agent_checks_total', { reply: 'up' }) >= 2);

    // We checked before the drain, so drain() waits for our next check and ends once we read it.
    let drained = false;
    const draining = agent.drain().then(() => (drained = true));
    assert.equal(drained, false);
    assert.equal(await check(port), 'drain\n');
    await within(draining, 2_000, 'drain() to resolve once the checker read drain');
    assert.equal(server.ready, true, 'the server itself keeps serving until its own close');
  });

  it('ends a drain at once when no balancer checks it', async () => {
    const { agent } = await world.startServer({ env: { PUSHLINE_AGENT_PORT: '0' } });
    await within(agent.drain(), 100, 'drain() with nobody to tell');
  });

  it('runs without a listener when no agent port is configured, still exporting the capacity signal', async () => {
    const { agent, metrics } = await world.startServer();
    assert.equal(agent.port, undefined);
    const families = parsePrometheusText(await metrics.metrics());
    assert.ok(families.some((f) => f.name === 'pushline_capacity_utilization'));
  });
});
