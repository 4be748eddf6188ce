import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { testInfra, testKafkaClient } from '@pushline/testkit';
import { probeReadiness } from '../src/index.ts';

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

  it('is not ready when Redis refuses connections, naming the failed check', async () => {
    const topics = await admin.listTopics();
    const readiness = await probeReadiness({
      admin: () => admin,
      redis: dead,
      pushRequestsTopic: topics[0] ?? '__consumer_offsets',
      timeoutMs: 2_000,
      draining: () => false,
    });
    assert.equal(readiness.ok, false);
    assert.equal(readiness.checks.redis.ok, false);
    assert.ok(readiness.checks.redis.error);
  });

  it('is not ready when the push-requests topic is missing, or while draining', async () => {
    const missing = await probeReadiness({
      admin: () => admin,
      redis: live,
      pushRequestsTopic: 'no-such-topic-for-readiness',
      timeoutMs: 2_000,
      draining: () => false,
    });
    assert.equal(missing.ok, false);
    assert.equal(missing.checks.redis.ok, true);
    assert.match(missing.checks.kafka.error ?? '', /no-such-topic-for-readiness/);

    const draining = await probeReadiness({
      admin: () => admin,
      redis: live,
      pushRequestsTopic: 'no-such-topic-for-readiness',
      timeoutMs: 2_000,
      draining: () => true,
    });
    assert.equal(draining.draining, true);
    assert.equal(draining.ok, false);
  });
});
