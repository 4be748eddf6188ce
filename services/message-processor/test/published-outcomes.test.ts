import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Admin, KafkaClient, Producer } from '@pushline/kafka';
import type { DeliveryEvent, RecordedOutcome } from '@pushline/protocol';
import { silentLogger } from '@pushline/telemetry';
import { testKafkaClient, uniquePrefix } from '@pushline/testkit';
import { DependencyError } from '../src/dependency-gate.ts';
import { PublishedOutcomes } from '../src/published-outcomes.ts';

function event(requestId: string, deviceId: string, at: number): DeliveryEvent {
  return {
    v: 1,
    requestId,
    target: { type: 'user', id: 'u1' },
    deviceId,
    outcome: 'delivered',
    terminal: true,
    source: 'async',
    latencyMs: 5,
    attempts: 1,
    at,
  };
}

describe('PublishedOutcomes against a real delivery-events topic', () => {
  let kafka: KafkaClient;
  let admin: Admin;
  let producer: Producer;
  let topic: string;

  before(async () => {
    kafka = testKafkaClient('published-outcomes');
    admin = kafka.admin();
    producer = kafka.producer();
    topic = `${uniquePrefix('published')}.delivery-events`;
    await admin.ensureTopics([{ name: topic, partitions: 3 }]);
    await producer.start();
  });
  after(async () => {
    await producer.close();
    await admin.close();
  });

  const publish = (events: readonly DeliveryEvent[]) =>
    producer.send(
      topic,
      events.map((ev) => ({ key: ev.deviceId ?? ev.target.id, value: JSON.stringify(ev) })),
    );

  it('tells the recorded events the log lacks from those it has, for many requests in one scan', async () => {
    let scans = 0;
    const checks = new PublishedOutcomes({
      admin: {
        recordsSince: (...args) => {
          scans++;
          return admin.recordsSince(...args);
        },
      },
      topic,
      logger: silentLogger(),
    });
    const at = Date.now();
    const first: RecordedOutcome = {
      at,
      events: [event('r1', 'd1', at + 1), event('r1', 'd2', at + 1), event('r1', 'd3', at + 1)],
    };
    const second: RecordedOutcome = { at, events: [event('r2', 'd1', at + 2)] };
    // The dead holder's produce reached the log for d1 and d3 of r1, not for d2 nor for r2.
    // A second attempt's event (same request and device, a later `at`) is not the recorded one.
    await publish(
      [first.events[0], first.events[2], { ...event('r2', 'd1', at + 9) }].filter((e) => e !== undefined),
    );
    await publish([{ ...event('noise', 'd9', at + 3), outcome: 'timeout' }]);

    const [missingFirst, missingSecond] = await Promise.all([checks.missing(first), checks.missing(second)]);
    assert.deepEqual(missingFirst, [first.events[1]]);
    assert.deepEqual(missingSecond, second.events);
    assert.equal(scans, 1, 'checks that come together share one scan');
    await checks.close();
  });

  it('fails as Kafka’s failure, so the record waits for Kafka instead of counting an attempt', async () => {
    const checks = new PublishedOutcomes({
      admin: { recordsSince: () => Promise.reject(new Error('broker gone')) },
      topic,
      logger: silentLogger(),
    });
    const at = Date.now();
    const failed = await checks.missing({ at, events: [event('r3', 'd1', at)] }).catch((err: unknown) => err);
    assert.ok(failed instanceof DependencyError);
    assert.equal(failed.dependency, 'kafka');
    await checks.close();
    const closed = await checks.missing({ at, events: [event('r3', 'd1', at)] }).catch((err: unknown) => err);
    assert.ok(closed instanceof DependencyError, 'a check after close fails, it does not hang');
    assert.deepEqual(await checks.missing({ at, events: [] }), [], 'nothing recorded: nothing to look for');
  });
});
