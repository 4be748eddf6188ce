import { ensurePrometheus, startDevstack, type Devstack } from '@pushline/devstack';
import { TEST_KAFKA_ENV, TEST_REDIS_CLUSTER_ENV, TEST_REDIS_ENV } from '@pushline/testkit';

/**
 * One real Kafka broker and one real redis-server for the whole run; every test isolates itself
 * with a unique topic and key prefix. PUSHLINE_KAFKA_BROKERS / PUSHLINE_REDIS_URL point the
 * suite at existing ones instead. PUSHLINE_TEST_REDIS=cluster runs the suite on a Redis Cluster
 * of 3 masters with a replica each (the tests that build their Redis clients through the testkit
 * and the services' config follow it).
 */
let devstack: Devstack | undefined;
// Quiet once set up: the runner's summary must stay the last thing a run prints.
let quiet = false;

export async function globalSetup(): Promise<void> {
  const mode = process.env['PUSHLINE_TEST_REDIS'] ?? '';
  if (mode !== '' && mode !== 'single' && mode !== 'cluster') {
    throw new Error(`PUSHLINE_TEST_REDIS must be single or cluster, not ${JSON.stringify(mode)}`);
  }
  devstack = await startDevstack({
    redisCluster: mode === 'cluster',
    log: (line) => {
      if (!quiet) process.stderr.write(`[devstack] ${line}\n`);
    },
  });
  // promtool and prometheus for the observability tests: installed here (as root, like
  // redis-server) so a first install is not charged to one test's timeout. Without them only
  // those tests fail, each with this same advice.
  await ensurePrometheus({ log: (line) => process.stderr.write(`[devstack] ${line}\n`) }).catch(
    (err: unknown) =>
      process.stderr.write(`[devstack] ${err instanceof Error ? err.message : String(err)}\n`),
  );
  quiet = true;
  process.env[TEST_KAFKA_ENV] = devstack.kafkaBrokers.join(',');
  process.env[TEST_REDIS_ENV] = devstack.redisUrl;
  if (devstack.redisClusterNodes) process.env[TEST_REDIS_CLUSTER_ENV] = devstack.redisClusterNodes.join(',');
}

export async function globalTeardown(): Promise<void> {
  await devstack?.stop();
}
