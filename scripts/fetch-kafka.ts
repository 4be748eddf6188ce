// Caches the Kafka broker jars for dev, tests and benchmarks (see docs/decisions/0003-kafka-version.md).
// Idempotent and cheap once cached: `npm test` runs it every time.
//   node scripts/fetch-kafka.ts
// Env: PUSHLINE_CACHE_DIR (default <repo>/.cache); PUSHLINE_KAFKA_BROKERS set means an existing
// cluster is used, so nothing is fetched.
import { KAFKA_VERSION, ensureKafkaJars } from '@pushline/devstack';

const log = (line: string): void => {
  process.stderr.write(`[fetch-kafka] ${line}\n`);
};

const external = (process.env['PUSHLINE_KAFKA_BROKERS'] ?? '').trim();
if (external !== '') {
  log(`PUSHLINE_KAFKA_BROKERS=${external} is set; using that cluster, not fetching Kafka jars`);
} else {
  try {
    const libsDir = await ensureKafkaJars({ log });
    log(`Kafka ${KAFKA_VERSION} jars ready in ${libsDir}`);
  } catch (err) {
    log(err instanceof Error ? err.message : String(err));
    process.exitCode = 1;
  }
}
