import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DeliveryEvent } from '@pushline/protocol';
import { sumSamples, type PromFamily } from '@pushline/telemetry';
import { collectRecords, waitUntil } from '@pushline/testkit';
import { startPlatform, type Platform, type ScrapedService, type TestDevice } from '../support/platform.ts';

/**
 * After a known mix of messages, every stage counter of every service adds up exactly: against
 * the next stage, against the delivery events on Kafka, and against what the devices received.
 * The identities checked here are the ones docs/observability.md documents and the alert rules
 * watch.
 */

let platform: Platform;
const devices: Record<string, TestDevice> = {};
let scraped: ScrapedService[];
let events: DeliveryEvent[];

const ASYNC_DELIVERED = 8;
const ASYNC_EVENTS = 15;
const BAD_RECORDS = 2;
const PUBLISHED = 14;

before(async () => {
  platform = await startPlatform('stages', { deliveryTimeoutMs: 1500 });
  const [a, b] = platform.servers;
  assert.ok(a && b);
  devices['a1'] = await platform.connect(a, 'a1', 'u1');
  devices['b1'] = await platform.connect(b, 'b1', 'u1');
  devices['r1'] = await platform.connect(a, 'r1', 'u2', 'reject');
  devices['s1'] = await platform.connect(b, 's1', 'u3', 'silent');

  const device = (id: string, extra: object = {}) => ({
    target: { type: 'device', id },
    payload: { id },
    ...extra,
  });
  const messages = [
    ...['a1', 'a1', 'a1', 'b1', 'b1', 'b1'].map((id) => device(id)), // 6 delivered
    { target: { type: 'user', id: 'u1' }, payload: { u: 1 } }, // 2 delivered (a1, b1)
    device('r1'),
    device('r1'), // 2 rejected
    device('s1'), // 1 timeout
    device('o1'),
    device('o1'), // 2 not_connected (never connected, no ttl)
    device('o1', { ttlSeconds: 600 }),
    device('o1', { ttlSeconds: 600 }), // 2 stored
  ];
  assert.equal(messages.length, PUBLISHED);
  const published = await platform.call('POST', '/v1/publish', { messages });
  assert.equal(published.status, 202, JSON.stringify(published.body));

  const producer = platform.kafka.producer();
  await producer.start();
  try {
    await producer.send(platform.topics.pushRequests, [
      { key: 'device:x', value: 'not json' },
      { key: 'device:x', value: JSON.stringify({ v: 1, id: 'bad', target: { type: 'planet', id: 'x' } }) },
    ]);
  } finally {
    await producer.close();
  }

  const direct = [
    ['b1', 200],
    ['b1', 200],
    ['b1', 200],
    ['r1', 422],
    ['o1', 404],
    ['s1', 504],
  ] as const;
  for (const [id, status] of direct) {
    const res = await platform.call('POST', `/v1/devices/${id}/messages`, {
      payload: { direct: id },
      timeoutMs: 500,
    });
    assert.equal(res.status, status, `direct push to ${id}: ${JSON.stringify(res.body)}`);
  }

  events = (await collectRecords(platform.kafka, platform.topics.deliveryEvents, ASYNC_EVENTS)).map((r) =>
    DeliveryEvent.parse(JSON.parse(r.value?.toString('utf8') ?? 'null')),
  );
  await waitUntil(
    async () => {
      scraped = await platform.scrape();
      const p = processor().families;
      const done = sumSamples(p, 'pushline_processor_records_total', { result: 'processed' });
      const dlq = sumSamples(p, 'pushline_processor_records_total', { result: 'dlq' });
      return done + dlq === PUBLISHED + BAD_RECORDS;
    },
    { timeoutMs: 20_000, what: 'every record processed or dead-lettered' },
  );
});
after(() => platform.close());

const processor = () => scraped.find((s) => s.name === 'message-processor') as ScrapedService;
const api = () => scraped.find((s) => s.name === 'push-api') as ScrapedService;
const servers = () => scraped.filter((s) => s.name.includes('-cs-'));
/** A counter summed over every connection server. */
const acrossServers = (name: string, labels: Record<string, string>) =>
  servers().reduce((sum, s) => sum + sumSamples(s.families, name, labels), 0);
const count = (families: PromFamily[], name: string, labels: Record<string, string> = {}) =>
  sumSamples(families, name, labels);
const eventsWith = (outcome: string, stored = false) =>
  events.filter((e) => e.outcome === outcome && (e.stored ?? false) === stored).length;

describe('processor stage counters', () => {
  it('account for every record: received = dlq + duplicate + processed + failed', () => {
    const p = processor().families;
    const r = (result: string) => count(p, 'pushline_processor_records_total', { result });
    assert.equal(r('received'), r('dlq') + r('duplicate') + r('processed') + r('failed'));
    assert.equal(r('failed'), 0);
    assert.equal(r('duplicate'), 0);
    assert.equal(r('dlq'), BAD_RECORDS);
    assert.equal(count(p, 'pushline_processor_dlq_total'), r('dlq'));
  });

  it('receive exactly what the API published plus what was produced around it', () => {
    const received = count(processor().families, 'pushline_processor_records_total', { result: 'received' });
    assert.equal(count(api().families, 'pushline_api_published_total'), PUBLISHED);
    assert.equal(received, count(api().families, 'pushline_api_published_total') + BAD_RECORDS);
  });

  it('record one outcome per delivery event on Kafka, outcome by outcome', () => {
    const p = processor().families;
    const o = (outcome: string) => count(p, 'pushline_processor_outcomes_total', { outcome });
    assert.equal(count(p, 'pushline_processor_outcomes_total'), events.length);
    assert.equal(events.length, ASYNC_EVENTS);
    assert.equal(o('delivered'), eventsWith('delivered'));
    assert.equal(o('rejected'), eventsWith('rejected'));
    assert.equal(o('timeout'), eventsWith('timeout'));
    assert.equal(o('not_connected'), eventsWith('not_connected'));
    assert.equal(o('stored'), eventsWith('not_connected', true));
    assert.deepEqual(
      [o('delivered'), o('rejected'), o('timeout'), o('not_connected'), o('stored')],
      [ASYNC_DELIVERED, 2, 1, 2, 2],
    );
    assert.equal(count(p, 'pushline_processor_outcomes_total', { target_type: 'user' }), 2);
  });
});

describe('async path across services', () => {
  it('routed = outcomes, and each delivered/rejected/timeout was decided on exactly one connection server', () => {
    const p = processor().families;
    const routed = (outcome: string) =>
      count(p, 'pushline_router_deliveries_total', { source: 'async', outcome });
    const o = (outcome: string) => count(p, 'pushline_processor_outcomes_total', { outcome });
    const onServers = (outcome: string) =>
      acrossServers('pushline_server_deliveries_total', { source: 'async', outcome });
    for (const outcome of ['delivered', 'rejected', 'timeout']) {
      assert.equal(routed(outcome), o(outcome), `router vs processor: ${outcome}`);
      assert.equal(onServers(outcome), routed(outcome), `connection servers vs router: ${outcome}`);
    }
    // Devices that are not registered never reach a server; some of them are stored instead.
    assert.equal(routed('not_connected'), o('not_connected') + o('stored'));
    assert.equal(onServers('not_connected'), 0);
    assert.equal(routed('error'), 0);
    assert.equal(
      count(p, 'pushline_publish_to_ack_seconds_count', { source: 'async' }),
      o('delivered'),
      'one publish→ack sample per delivered message',
    );
  });
});

describe('direct path across services', () => {
  it('API outcomes = routed = decided on the connection servers', () => {
    const a = api().families;
    const pushed = (outcome: string) => count(a, 'pushline_api_push_outcomes_total', { outcome });
    const routed = (outcome: string) =>
      count(a, 'pushline_router_deliveries_total', { source: 'direct', outcome });
    const onServers = (outcome: string) =>
      acrossServers('pushline_server_deliveries_total', { source: 'direct', outcome });
    assert.deepEqual(
      ['delivered', 'rejected', 'timeout', 'not_connected'].map(pushed),
      [3, 1, 1, 1],
      'API outcomes by delivered, rejected, timeout, not_connected',
    );
    for (const outcome of ['delivered', 'rejected', 'timeout', 'not_connected']) {
      assert.equal(routed(outcome), pushed(outcome), `router vs API: ${outcome}`);
    }
    for (const outcome of ['delivered', 'rejected', 'timeout']) {
      assert.equal(onServers(outcome), routed(outcome), `connection servers vs router: ${outcome}`);
    }
    assert.equal(count(a, 'pushline_api_push_to_ack_seconds_count'), pushed('delivered'));
    assert.equal(
      count(a, 'pushline_api_requests_total', { route: '/v1/devices/:deviceId/messages' }),
      6,
      'one request sample per direct push',
    );
  });
});

describe('connection servers against the devices', () => {
  it('count what the devices saw: delivered = acked, rejected = refused, timeout = ignored', () => {
    const received = (ids: string[]) => ids.reduce((n, id) => n + (devices[id]?.received.length ?? 0), 0);
    const all = (outcome: string) => acrossServers('pushline_server_deliveries_total', { outcome });
    assert.equal(all('delivered'), received(['a1', 'b1']));
    assert.equal(all('delivered'), ASYNC_DELIVERED + 3);
    assert.equal(all('rejected'), received(['r1']));
    assert.equal(all('timeout'), received(['s1']));
    assert.equal(
      acrossServers('pushline_device_ack_seconds_count', { outcome: 'delivered' }),
      all('delivered'),
    );
    assert.equal(
      acrossServers('pushline_device_ack_seconds_count', { outcome: 'rejected' }),
      all('rejected'),
    );
  });

  it('hold the connections the devices opened', () => {
    assert.equal(acrossServers('pushline_connections', {}), Object.keys(devices).length);
    assert.equal(acrossServers('pushline_connects_total', {}), Object.keys(devices).length);
  });
});

describe('paths the mix above leaves out', () => {
  /** A counter summed over every service that exports it. */
  const everywhere = (name: string, labels: Record<string, string> = {}) =>
    scraped.reduce((sum, s) => sum + sumSamples(s.families, name, labels), 0);
  const o = (outcome: string, target_type: string) =>
    count(processor().families, 'pushline_processor_outcomes_total', { outcome, target_type });

  it('a topic broadcast is one delivered event and adds no publish→ack sample (identity 6)', async () => {
    const [a] = platform.servers;
    assert.ok(a);
    const n1 = await platform.connect(a, 'n1', 'u5');
    // A device may always subscribe to its own user's topics.
    assert.deepEqual(await n1.request('subscribe', { topic: 'user:u5' }), {
      ok: true,
      topic: 'user:u5',
    });
    const published = await platform.call('POST', '/v1/publish', {
      target: { type: 'topic', id: 'user:u5' },
      payload: { news: 1 },
    });
    assert.equal(published.status, 202);
    await n1.nextMessage();
    await waitUntil(
      async () => {
        scraped = await platform.scrape();
        return o('delivered', 'topic') === 1;
      },
      { what: 'the broadcast recorded' },
    );
    assert.equal(
      count(processor().families, 'pushline_publish_to_ack_seconds_count', { source: 'async' }),
      o('delivered', 'device') + o('delivered', 'user'),
      'one publish→ack sample per device ack, none for the broadcast',
    );
    assert.equal(o('delivered', 'device') + o('delivered', 'user'), ASYNC_DELIVERED);
  });

  it('stored messages drained by the connection server are publish→ack{offline} samples there (identity 7)', async () => {
    const [, b] = platform.servers;
    assert.ok(b);
    // o1 got two messages stored with a ttl in the mix above; its connect drains them.
    const o1 = await platform.connect(b, 'o1', 'u6');
    await waitUntil(() => o1.received.length === 2, { what: 'both stored messages at o1' });
    await waitUntil(
      async () => {
        scraped = await platform.scrape();
        return everywhere('pushline_offline_drained_total', { outcome: 'delivered' }) === 2;
      },
      { what: 'the drain counted' },
    );
    assert.equal(
      everywhere('pushline_publish_to_ack_seconds_count', { source: 'offline' }),
      everywhere('pushline_offline_drained_total', { outcome: 'delivered' }),
    );
    const onB = scraped.find((s) => s.url.startsWith(b.internalUrl)) as ScrapedService;
    assert.equal(count(onB.families, 'pushline_publish_to_ack_seconds_count', { source: 'offline' }), 2);
    // Hours in the store read as hours: the buckets reach 30 days.
    assert.equal(
      count(onB.families, 'pushline_publish_to_ack_seconds_bucket', { source: 'offline', le: '2592000' }),
      2,
    );
  });

  it('a direct push stored for a device that is away is counted once on each side (identity 8)', async () => {
    // The API counts the live outcome the router reported (not_connected here) and the store
    // counts the message it kept; `stored` is the answer, never an outcome counter's label.
    const OUTCOMES = ['delivered', 'not_connected', 'rejected', 'timeout'];
    const a = api().families;
    const pushed = (families: PromFamily[], outcome: string) =>
      count(families, 'pushline_api_push_outcomes_total', { outcome });
    const routed = (families: PromFamily[], outcome: string) =>
      count(families, 'pushline_router_deliveries_total', { source: 'direct', outcome });
    const before = {
      pushed: OUTCOMES.map((o) => pushed(a, o)),
      routed: OUTCOMES.map((o) => routed(a, o)),
      stored: count(a, 'pushline_offline_stored_total'),
      acks: count(a, 'pushline_api_push_to_ack_seconds_count'),
    };
    const res = await platform.call('POST', '/v1/devices/away1/messages', {
      payload: { x: 1 },
      ttlSeconds: 600,
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    assert.equal((res.body as { outcome?: unknown }).outcome, 'stored');
    assert.equal((res.body as { reason?: unknown }).reason, 'not_connected', 'stored after not_connected');
    scraped = await platform.scrape();
    const after = api().families;
    assert.equal(
      count(after, 'pushline_api_push_outcomes_total', { outcome: 'stored' }),
      0,
      'no stored outcome series: a stored push counts under its live outcome',
    );
    assert.deepEqual(
      OUTCOMES.map((o, i) => pushed(after, o) - (before.pushed[i] ?? 0)),
      [0, 1, 0, 0],
      'once on the API side, under the live outcome not_connected',
    );
    assert.deepEqual(
      OUTCOMES.map((o, i) => routed(after, o) - (before.routed[i] ?? 0)),
      [0, 1, 0, 0],
      'once on the router side',
    );
    assert.equal(count(after, 'pushline_offline_stored_total'), before.stored + 1, 'once in the store');
    for (const outcome of OUTCOMES) assert.equal(pushed(after, outcome), routed(after, outcome), outcome);
    assert.equal(count(after, 'pushline_api_push_to_ack_seconds_count'), before.acks, 'no ack sample');
  });
});
