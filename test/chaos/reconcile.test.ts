import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  parseChaosOptions,
  reconcile,
  unsettled,
  type ReconcileEvent,
  type ReconcileInput,
  type RequestKind,
  type SentRequest,
} from '@pushline/bench';

/**
 * The chaos suite's reconciliation rules, on plain data (a unit test of pure logic): what counts
 * as a silent loss, a missing or repeated terminal event, a false `delivered`, a received
 * message reported undelivered, and what the stayed-connected ratio counts.
 */

function sent(
  id: string,
  kind: RequestKind,
  targetId: string,
  extra: Partial<SentRequest> = {},
): SentRequest {
  return {
    id,
    kind,
    targetId,
    ttlSeconds: undefined,
    sentAt: 1,
    answeredAt: 2,
    status: 'accepted',
    httpStatus: kind === 'direct' ? 200 : 202,
    outcome: kind === 'direct' ? 'delivered' : undefined,
    reason: undefined,
    error: undefined,
    ...extra,
  };
}

function ev(
  requestId: string,
  deviceId: string | undefined,
  outcome: ReconcileEvent['event']['outcome'],
  extra: Partial<ReconcileEvent['event']> = {},
): ReconcileEvent {
  return {
    event: {
      requestId,
      deviceId,
      outcome,
      terminal: true,
      source: 'async',
      reason: undefined,
      at: 10,
      ...extra,
    },
  };
}

interface World {
  sent: SentRequest[];
  events?: ReconcileEvent[];
  /** `device:id` → times received */
  receipts?: Record<string, number>;
  users?: Record<string, string[]>;
  /** devices that stayed connected (and subscribed) */
  stayed?: string[];
}

function input(w: World): ReconcileInput {
  const users = w.users ?? {};
  const deviceIds = [
    ...new Set([...Object.values(users).flat(), ...w.sent.map((s) => s.targetId), 'd1', 'd2', 'd3']),
  ];
  return {
    sent: w.sent,
    deviceIds,
    receiptCount: (d, id) => w.receipts?.[`${d}:${id}`] ?? 0,
    events: (id) => (w.events ?? []).filter((e) => e.event.requestId === id),
    devicesOfUser: (u) => users[u] ?? [],
    stayedConnected: (d) => (w.stayed ?? []).includes(d),
  };
}

test('a device message delivered and received is clean, and counts for a device that stayed connected', () => {
  const t = reconcile(
    input({
      sent: [sent('m1', 'publish-device', 'd1'), sent('m2', 'kafka-device', 'd1')],
      events: [ev('m1', 'd1', 'delivered'), ev('m2', 'd1', 'delivered')],
      receipts: { 'd1:m1': 1, 'd1:m2': 2 },
      stayed: ['d1'],
    }),
  );
  assert.deepEqual(t.violations, {
    silentLoss: 0,
    zeroTerminal: 0,
    severalTerminal: 0,
    deliveredWithoutReceipt: 0,
    receivedNotDelivered: 0,
  });
  assert.equal(t.accepted, 2);
  assert.equal(t.delivered, 2);
  assert.equal(t.duplicates, 1);
  assert.deepEqual(t.stayed, { accepted: 2, delivered: 2 });
  assert.deepEqual(t.outcomes, { 'async:delivered': 2 });
});

test('no terminal event and no receipt is a silent loss; a stored event alone is not terminal', () => {
  const t = reconcile(
    input({
      sent: [sent('m1', 'publish-device', 'd1'), sent('m2', 'publish-device', 'd2')],
      events: [ev('m2', 'd2', 'not_connected', { terminal: false })],
    }),
  );
  assert.equal(t.violations.zeroTerminal, 2);
  assert.equal(t.violations.silentLoss, 2);
  assert.equal(t.stored, 1);
  assert.match(t.examples['silentLoss']?.[0] ?? '', /m1 → d1: no events; device never received it/);
});

test('stored then delivered from the offline store is one terminal outcome', () => {
  const t = reconcile(
    input({
      sent: [sent('m1', 'publish-device', 'd1', { ttlSeconds: 60 })],
      events: [
        ev('m1', 'd1', 'timeout', { terminal: false }),
        ev('m1', 'd1', 'delivered', { source: 'offline', at: 20 }),
      ],
      receipts: { 'd1:m1': 1 },
    }),
  );
  assert.equal(
    Object.values(t.violations).reduce((a, b) => a + b, 0),
    0,
  );
  assert.deepEqual(t.outcomes, { 'offline:delivered': 1 });
});

test('delivered without a receipt, and two terminal events, are violations', () => {
  const t = reconcile(
    input({
      sent: [sent('m1', 'publish-device', 'd1'), sent('m2', 'publish-device', 'd2')],
      events: [
        ev('m1', 'd1', 'delivered'),
        ev('m2', 'd2', 'delivered'),
        ev('m2', 'd2', 'expired', { at: 20 }),
      ],
      receipts: { 'd2:m2': 1 },
    }),
  );
  assert.equal(t.violations.deliveredWithoutReceipt, 1);
  assert.equal(t.violations.silentLoss, 1);
  assert.equal(t.violations.severalTerminal, 1);
  assert.equal(t.violations.receivedNotDelivered, 1, 'm2 was received and also reported expired');
  assert.deepEqual(t.outcomes, { 'async:delivered': 2 }, 'the first terminal event per pair is the outcome');
});

test('received but reported not_connected/expired is a violation; timeout is "may have been delivered"', () => {
  const t = reconcile(
    input({
      sent: [
        sent('m1', 'publish-device', 'd1'),
        sent('m2', 'publish-device', 'd1'),
        sent('m3', 'publish-device', 'd1'),
      ],
      events: [
        ev('m1', 'd1', 'not_connected', { reason: 'server_unreachable' }),
        ev('m2', 'd1', 'expired', { source: 'offline', reason: 'ttl_elapsed' }),
        ev('m3', 'd1', 'timeout'),
      ],
      receipts: { 'd1:m1': 1, 'd1:m2': 1, 'd1:m3': 1 },
      stayed: ['d1'],
    }),
  );
  assert.equal(t.violations.receivedNotDelivered, 2);
  assert.equal(t.receivedTimeout, 1);
  assert.deepEqual(t.stayed, { accepted: 3, delivered: 0 });
});

test('a user fan-out that skips a connected device leaves that pair without a terminal event', () => {
  const t = reconcile(
    input({
      sent: [sent('m1', 'publish-user', 'u1')],
      events: [ev('m1', 'd1', 'delivered')],
      receipts: { 'd1:m1': 1 },
      users: { u1: ['d1', 'd2'] },
      stayed: ['d1', 'd2'],
    }),
  );
  assert.equal(t.violations.zeroTerminal, 1);
  assert.equal(t.violations.silentLoss, 1);
  assert.match(t.examples['zeroTerminal']?.[0] ?? '', /m1 → d2/);
  assert.deepEqual(t.stayed, { accepted: 2, delivered: 1 });
});

test('a device that received a user message but has no event of its own is unaccounted', () => {
  const t = reconcile(
    input({
      sent: [sent('m1', 'publish-user', 'u1')],
      events: [ev('m1', 'd1', 'delivered')],
      receipts: { 'd1:m1': 1, 'd2:m1': 1 },
      users: { u1: ['d1', 'd2'] },
    }),
  );
  assert.equal(t.violations.zeroTerminal, 1);
  assert.equal(t.violations.silentLoss, 0, 'the device has it');
});

test('"no connected devices" for a user whose devices are connected is explicit, and shows in the ratio', () => {
  const t = reconcile(
    input({
      sent: [sent('m1', 'publish-user', 'u1'), sent('m2', 'publish-user', 'u2')],
      events: [ev('m1', undefined, 'not_connected', { reason: 'no_connected_devices' })],
      users: { u1: ['d1', 'd2'], u2: ['d3'] },
      stayed: ['d1', 'd2'],
    }),
  );
  assert.equal(t.violations.silentLoss, 1, 'only m2, which got no event at all');
  assert.equal(t.violations.zeroTerminal, 1);
  assert.deepEqual(t.stayed, { accepted: 2, delivered: 0 });
  assert.equal(t.outcomes['async:not_connected:no_connected_devices'], 1);
});

test('a device-less terminal event answers for the devices of a user that have none of their own', () => {
  const t = reconcile(
    input({
      sent: [sent('m1', 'publish-user', 'u1')],
      events: [ev('m1', undefined, 'expired', { reason: 'ttl_elapsed' })],
      receipts: { 'd1:m1': 1 },
      users: { u1: ['d1', 'd2'] },
      stayed: ['d1', 'd2'],
    }),
  );
  assert.equal(t.violations.zeroTerminal, 0);
  assert.equal(t.violations.receivedNotDelivered, 1, 'd1 had it, the request says expired');
  assert.deepEqual(t.stayed, { accepted: 2, delivered: 0 });
});

test('an accepted request the suite never saw on the push-requests topic is named as such', () => {
  const w = { sent: [sent('m1', 'kafka-device', 'd1'), sent('m2', 'kafka-device', 'd1')] };
  const t = reconcile({ ...input(w), inRequestLog: (id) => id === 'm2' });
  assert.equal(t.acceptedNotInLog, 1);
  assert.match(t.examples['silentLoss']?.[0] ?? '', /m1 → d1: .*not on the push-requests topic/);
  assert.doesNotMatch(t.examples['silentLoss']?.[1] ?? '', /not on the push-requests topic/);
});

test('a topic broadcast has one aggregate event that may not count more acks than receipts', () => {
  const t = reconcile(
    input({
      sent: [sent('t1', 'publish-topic', 'chaos.news'), sent('t2', 'publish-topic', 'chaos.news')],
      events: [
        ev('t1', undefined, 'delivered', { deliveredCount: 3 }),
        ev('t2', undefined, 'delivered', { deliveredCount: 1 }),
      ],
      receipts: { 'd1:t1': 1, 'd2:t1': 1, 'd1:t2': 1 },
      stayed: ['d1', 'd2'],
    }),
  );
  assert.equal(t.violations.deliveredWithoutReceipt, 1);
  assert.equal(t.violations.zeroTerminal, 0);
  assert.deepEqual(t.stayed, { accepted: 4, delivered: 3 }, 'each subscribed stayed device is a pair');
});

test('direct pushes reconcile against their HTTP answers', () => {
  const t = reconcile(
    input({
      sent: [
        sent('p1', 'direct', 'd1'),
        sent('p2', 'direct', 'd1', {
          httpStatus: 404,
          outcome: 'not_connected',
          reason: 'server_unreachable',
        }),
        sent('p3', 'direct', 'd1', { httpStatus: 504, outcome: 'timeout' }),
        sent('p4', 'direct', 'd1', { httpStatus: 503, status: 'refused', outcome: undefined }),
        sent('p5', 'direct', 'd1', { httpStatus: undefined, status: 'unknown', outcome: undefined }),
      ],
      receipts: { 'd1:p2': 1, 'd1:p3': 1, 'd1:p4': 1 },
      stayed: ['d1'],
    }),
  );
  assert.equal(t.violations.silentLoss, 1, 'p1: 200 delivered, never received');
  assert.equal(t.violations.deliveredWithoutReceipt, 1);
  assert.equal(t.violations.receivedNotDelivered, 1, 'p2: received, answered not_connected');
  assert.equal(
    t.violations.zeroTerminal + t.violations.severalTerminal,
    0,
    'an HTTP answer is the terminal outcome',
  );
  assert.equal(t.receivedTimeout, 1);
  assert.equal(t.refusedButReceived, 1);
  assert.equal(t.refused, 1);
  assert.equal(t.unknown, 1);
  assert.deepEqual(t.stayed, { accepted: 3, delivered: 0 });
});

test('unsettled counts accepted async requests still waiting for a terminal event', () => {
  const sentList = [
    sent('a', 'publish-device', 'd1'),
    sent('b', 'publish-device', 'd1'),
    sent('c', 'publish-user', 'u1'),
    sent('d', 'direct', 'd1'),
    sent('e', 'publish-device', 'd1', { status: 'refused' }),
    sent('f', 'publish-device', 'd1', { status: 'pending' }),
  ];
  const events = [
    ev('a', 'd1', 'delivered'),
    ev('b', 'd1', 'timeout', { terminal: false }),
    ev('c', 'd1', 'delivered'),
    ev('c', 'd2', 'timeout', { terminal: false }),
  ];
  assert.equal(
    unsettled({ sent: sentList, events: (id) => events.filter((e) => e.event.requestId === id) }),
    3,
  );
});

test('chaos options: the short run, and kafka-restart refused on an external broker', () => {
  const short = parseChaosOptions(['--short'], {}, '/tmp/out');
  assert.equal(short.short, true);
  assert.ok(short.scenarios.length >= 3 && !short.scenarios.includes('kafka-restart'));
  assert.deepEqual(parseChaosOptions(['--scenarios=cs-drain,cs-kill'], {}, '/o').scenarios, [
    'cs-kill',
    'cs-drain',
  ]);
  assert.throws(
    () => parseChaosOptions(['--scenarios=kafka-restart'], { PUSHLINE_KAFKA_BROKERS: '127.0.0.1:1' }, '/o'),
    /kafka-restart kills the broker/,
  );
  assert.throws(() => parseChaosOptions(['--scenarios=nope'], {}, '/o'), /unknown scenario/);
});
