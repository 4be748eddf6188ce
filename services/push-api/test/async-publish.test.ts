import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { messageProcessorEnv, parseEnv } from '@pushline/config';
import type { ConnectionServer } from '@pushline/connection-server';
import { assembleMessageProcessor, type AssembledMessageProcessor } from '@pushline/message-processor';
import { DeliveryEvent } from '@pushline/protocol';
import { silentLogger } from '@pushline/telemetry';
import { collectRecords, recordJson, testInfra } from '@pushline/testkit';
import { call } from './harness.ts';
import { startPlatform, type Platform } from './platform.ts';

let p: Platform;
let processor: AssembledMessageProcessor;

before(async () => {
  p = await startPlatform('async');
  const { h } = p;
  processor = assembleMessageProcessor(
    parseEnv(messageProcessorEnv, {
      PUSHLINE_KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
      PUSHLINE_REDIS_URL: testInfra().redisUrl,
      PUSHLINE_TOPIC_PREFIX: `${h.prefix}.`,
      PUSHLINE_KEY_PREFIX: h.keyPrefix,
      PUSHLINE_KAFKA_PARTITIONS: '3',
      PUSHLINE_INTERNAL_TOKEN: h.internalToken,
      PUSHLINE_PROCESSOR_GROUP_ID: `${h.prefix}-processor`,
      PUSHLINE_PROCESSOR_PORT: '0',
      PUSHLINE_LOG_LEVEL: 'silent',
    }),
    { logger: silentLogger(), redis: h.redis, kafka: h.kafka },
  );
  // Closed before the platform, so nothing is mid-delivery when the servers go.
  h.defer({ name: 'message processor', run: () => processor.close() });
  await processor.start();
});
after(() => p.close());

describe('async publish → delivery', () => {
  it('publishes a batch that reaches devices on both servers and records one delivery event per device', async () => {
    const [A, B] = p.servers as [ConnectionServer, ConnectionServer];
    const onA = await p.connect(A, 'async-a', 'async-user-a');
    const onB = await p.connect(B, 'async-b', 'async-user-b');
    const got = Promise.all([onA.nextMessage(15_000), onB.nextMessage(15_000)]);
    const res = await call(p.h.url, 'POST', '/v1/publish', {
      key: p.h.keys.publish,
      body: {
        messages: [
          { id: 'async-1', target: { type: 'device', id: 'async-a' }, payload: { n: 1 } },
          { id: 'async-2', target: { type: 'device', id: 'async-b' }, payload: { n: 2 } },
          { id: 'async-3', target: { type: 'device', id: 'async-offline' }, payload: { n: 3 } },
        ],
      },
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    assert.deepEqual(res.body, { ids: ['async-1', 'async-2', 'async-3'] });

    const [a, b] = await got;
    assert.equal(a.id, 'async-1');
    assert.equal(b.id, 'async-2');

    const records = await collectRecords(p.h.kafka, p.h.topics.deliveryEvents, 3, { timeoutMs: 20_000 });
    const events = records.map((r) => DeliveryEvent.parse(recordJson(r)));
    const byRequest = Object.fromEntries(events.map((e) => [e.requestId, [e.deviceId, e.outcome, e.source]]));
    assert.deepEqual(byRequest, {
      'async-1': ['async-a', 'delivered', 'async'],
      'async-2': ['async-b', 'delivered', 'async'],
      'async-3': ['async-offline', 'not_connected', 'async'],
    });
  });
});
