import { startDevstack, type Devstack } from '@pushline/devstack';
import { TEST_KAFKA_ENV, TEST_REDIS_ENV } from '@pushline/testkit';

/**
 * One real Kafka broker and one real redis-server for the whole run; every test isolates itself
 * with a unique topic and key prefix. PUSHLINE_KAFKA_BROKERS / PUSHLINE_REDIS_URL point the
 * suite at existing ones instead.
 */
let devstack: Devstack | undefined;

export async function globalSetup(): Promise<void> {
  devstack = await startDevstack({ log: (line) => process.stderr.write(`[devstack] ${line}\n`) });
  process.env[TEST_KAFKA_ENV] = devstack.kafkaBrokers.join(',');
  process.env[TEST_REDIS_ENV] = devstack.redisUrl;
}

export async function globalTeardown(): Promise<void> {
  await devstack?.stop();
}
