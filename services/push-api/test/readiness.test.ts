import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { createLogger, type Logger } from '@pushline/telemetry';
import { testInfra, testKafkaClient } from '@pushline/testkit';
import { cachedReadiness, probeReadiness, type Readiness } from '../src/index.ts';

/** A logger whose lines the test reads: failed checks are explained there, not in the answer. */
function capturingLogger(): { logger: Logger; lines: () => string } {
  let text = '';
  const logger = createLogger({
    service: 'test',
    level: 'warn',
    destination: { write: (line: string) => void (text += line) },
  });
  return { logger, lines: () => text };
}

/** A port nothing listens on: bound, then released. */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('readiness probe', () => {
  const kafka = testKafkaClient('push-api-readiness');
  const admin = kafka.admin();
  let live: Redis;
  let dead: Redis;
  before(async () => {
    live = new Redis(testInfra().redisUrl);
    dead = new Redis({
      host: '127.0.0.1',
      port: await deadPort(),
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    dead.on('error', () => {}); // the refused connection is the point of the test
  });
  after(async () => {
    await admin.close();
    await live.quit();
    dead.disconnect();
  });

  it('is not ready when Redis refuses connections, naming the failed check but not its error', async () => {
    const topics = await admin.listTopics();
    const log = capturingLogger();
    const readiness = await probeReadiness({
      admin: () => admin,
      redis: dead,
      pushRequestsTopic: topics[0] ?? '__consumer_offsets',
      timeoutMs: 2_000,
      draining: () => false,
      logger: log.logger,
    });
    assert.equal(readiness.ok, false);
    assert.equal(readiness.checks.redis.ok, false);
    assert.deepEqual(Object.keys(readiness.checks.redis).sort(), ['latencyMs', 'ok']);
    assert.match(log.lines(), /"dependency":"redis"/);
  });

  it('is not ready when the push-requests topic is missing, or while draining', async () => {
    const log = capturingLogger();
    const missing = await probeReadiness({
      admin: () => admin,
      redis: live,
      pushRequestsTopic: 'no-such-topic-for-readiness',
      timeoutMs: 2_000,
      draining: () => false,
      logger: log.logger,
    });
    assert.equal(missing.ok, false);
    assert.equal(missing.checks.redis.ok, true);
    assert.equal(
      JSON.stringify(missing).includes('no-such-topic'),
      false,
      'no internal detail in the answer',
    );
    assert.match(log.lines(), /no-such-topic-for-readiness/);

    const draining = await probeReadiness({
      admin: () => admin,
      redis: live,
      pushRequestsTopic: 'no-such-topic-for-readiness',
      timeoutMs: 2_000,
      draining: () => true,
      logger: log.logger,
    });
    assert.equal(draining.draining, true);
    assert.equal(draining.ok, false);
  });
});

describe('cached readiness', () => {
  it('probes once per interval however often it is asked, and shares a probe in flight', async () => {
    let probes = 0;
    const answer: Readiness = {
      ok: true,
      draining: false,
      checks: { kafka: { ok: true, latencyMs: 1 }, redis: { ok: true, latencyMs: 1 } },
    };
    const ready = cachedReadiness(async () => {
      probes++;
      return answer;
    }, 60_000);
    const answers = await Promise.all(Array.from({ length: 50 }, () => ready()));
    assert.equal(probes, 1);
    assert.ok(answers.every((a) => a === answer));
    const fresh = cachedReadiness(async () => {
      probes++;
      return answer;
    }, 0);
    await fresh();
    await fresh();
    assert.equal(probes, 3, 'an interval of 0 probes every time');
  });
});
