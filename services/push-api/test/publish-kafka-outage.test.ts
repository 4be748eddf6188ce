import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startKafka, type KafkaInstance } from '@pushline/devstack';
import { createKafkaClient, type KafkaClient } from '@pushline/kafka';
import { PushRequest } from '@pushline/protocol';
import { silentLogger } from '@pushline/telemetry';
import { collectRecords, recordJson, waitUntil, within } from '@pushline/testkit';
import { PROBLEM_TYPE_BASE, REPLAYED_HEADER } from '../src/index.ts';
import { call, startApi, type ApiHarness } from './harness.ts';

/**
 * POST /v1/publish against a broker of its own (not the run's shared one), which the tests stop
 * (SIGSTOP) and kill (kill -9). One partition, so the push-requests log has one order to read.
 */
const PUBLISH_TIMEOUT_MS = 1000;
/** Far below the 26–42 s the API used to hang, far above the configured deadline. */
const ANSWER_BOUND_MS = 15_000;

let kafka: KafkaInstance;
let client: KafkaClient;
let h: ApiHarness;

before(async () => {
  kafka = await startKafka();
  client = createKafkaClient({ brokers: kafka.brokers, clientId: 'outage-test', logger: silentLogger() });
  h = await startApi({
    label: 'outage',
    env: {
      PUSHLINE_KAFKA_BROKERS: kafka.brokers.join(','),
      PUSHLINE_KAFKA_PARTITIONS: '1',
      PUSHLINE_API_PUBLISH_TIMEOUT_MS: String(PUBLISH_TIMEOUT_MS),
    },
  });
});
after(async () => {
  try {
    process.kill(kafka.pid, 'SIGCONT');
  } catch {
    // Already dead (the last test kills it).
  }
  await h.close();
  // Sends handed to the producer before the kill keep retrying in the background for up to the
  // client's retry budget (about a minute); the test process exits once they give up.
  await kafka.stop();
});

const publish = (body: unknown, idempotencyKey?: string) =>
  within(
    call(h.url, 'POST', '/v1/publish', {
      key: h.keys.publish,
      body,
      ...(idempotencyKey ? { headers: { 'idempotency-key': idempotencyKey } } : {}),
    }),
    ANSWER_BOUND_MS,
    'the publish answer',
  );

async function published(): Promise<number> {
  const metric = await h.metrics.getSingleMetric('pushline_api_published_total')?.get();
  return metric?.values.reduce((n, v) => n + v.value, 0) ?? 0;
}

const batch = (tag: string) => ({
  messages: [
    { target: { type: 'device', id: `${tag}-a` }, payload: { tag, n: 1 } },
    { target: { type: 'device', id: `${tag}-b` }, payload: { tag, n: 2 } },
  ],
});

describe('POST /v1/publish while the broker is unavailable', () => {
  it('answers 503 with Retry-After at the deadline; a retry with the same key adds no message', async () => {
    const first = await publish(batch('warm'), 'warm-key');
    assert.equal(first.status, 202, JSON.stringify(first.body));

    process.kill(kafka.pid, 'SIGSTOP');
    let slow;
    try {
      slow = await publish(batch('slow'), 'slow-key');
    } finally {
      process.kill(kafka.pid, 'SIGCONT');
    }
    assert.equal(slow.status, 503, JSON.stringify(slow.body));
    assert.match(slow.contentType, /^application\/problem\+json/);
    assert.equal((slow.body as { type: string }).type, `${PROBLEM_TYPE_BASE}service-unavailable`);
    assert.equal(slow.headers.get('retry-after'), '2');

    // The broker comes back and acknowledges what it was handed before the deadline.
    await waitUntil(async () => (await published()) === 4, {
      timeoutMs: 60_000,
      what: 'the late acknowledgement',
    });
    const retry = await publish(batch('slow'), 'slow-key');
    assert.equal(retry.status, 202, JSON.stringify(retry.body));
    assert.equal(retry.headers.get(REPLAYED_HEADER), 'true');
    const ids = (retry.body as { ids: string[] }).ids;
    assert.equal(ids.length, 2);

    // Everything in the log before a last marker: the warm batch and the slow batch, once each.
    const marker = await publish({ id: 'marker', target: { type: 'device', id: 'marker' }, payload: 0 });
    assert.equal(marker.status, 202);
    const records: PushRequest[] = [];
    await collectRecords(client, h.topics.pushRequests, 1, {
      // One partition: records arrive in log order; the filter sees each of them.
      filter: (r) => records.push(PushRequest.parse(recordJson(r))) > 0 && records.at(-1)?.id === 'marker',
      timeoutMs: 30_000,
    });
    const beforeMarker = records.slice(
      0,
      records.findIndex((r) => r.id === 'marker'),
    );
    const slowIds = beforeMarker
      .filter((r) => (r.payload as { tag: string }).tag === 'slow')
      .map((r) => r.id);
    assert.deepEqual(slowIds, ids, 'the slow batch is in the log once, with the ids the retry answered');
    for (const r of beforeMarker) assert.ok(r.origin, 'every request carries its API key id as origin');
  });

  it('keeps the key while the outcome is unknown: a retry takes it over, another body is refused', async () => {
    process.kill(kafka.pid, 'SIGKILL');
    const first = await publish(batch('down'), 'down-key');
    assert.equal(first.status, 503, JSON.stringify(first.body));
    assert.equal(first.headers.get('retry-after'), '2');
    const retry = await publish(batch('down'), 'down-key');
    assert.equal(retry.status, 503, 'the retry runs again (not 409): the first one ended');
    const other = await publish(batch('other'), 'down-key');
    assert.equal(other.status, 422, JSON.stringify(other.body));
    assert.equal((other.body as { type: string }).type, `${PROBLEM_TYPE_BASE}idempotency-key-reused`);
  });
});
