import { randomBytes } from 'node:crypto';

/** Set by test/global-setup.ts, which starts one real Kafka and one real Redis per test run. */
export const TEST_KAFKA_ENV = 'PUSHLINE_TEST_KAFKA_BROKERS';
export const TEST_REDIS_ENV = 'PUSHLINE_TEST_REDIS_URL';

export interface TestInfra {
  readonly kafkaBrokers: string[];
  readonly redisUrl: string;
}

export function testInfra(): TestInfra {
  const brokers = process.env[TEST_KAFKA_ENV];
  const redisUrl = process.env[TEST_REDIS_ENV];
  if (!brokers || !redisUrl) {
    throw new Error(
      `${TEST_KAFKA_ENV} and ${TEST_REDIS_ENV} are unset: run tests through \`npm test\` (its global setup starts Kafka and Redis)`,
    );
  }
  return { kafkaBrokers: brokers.split(','), redisUrl };
}

/** A prefix unique to one test, for topics and keys, so tests never see each other's data. */
export function uniquePrefix(label: string): string {
  return `t-${label.replace(/[^a-zA-Z0-9]/g, '').slice(0, 20)}-${randomBytes(4).toString('hex')}`;
}

/** A 32+ character secret for tests. */
export function testSecret(): string {
  return randomBytes(32).toString('hex');
}
