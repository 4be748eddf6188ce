export {
  testInfra,
  testRedis,
  keysMatching,
  deleteKeys,
  uniquePrefix,
  testSecret,
  TEST_KAFKA_ENV,
  TEST_REDIS_ENV,
  TEST_REDIS_CLUSTER_ENV,
} from './infra.ts';
export type { TestInfra } from './infra.ts';
export { waitUntil, within } from './wait.ts';
export { watchRedisCommands } from './monitor.ts';
export type { MonitoredCommand } from './monitor.ts';
export { testKafkaClient, collectRecords, recordJson, nextFetchWait } from './kafka.ts';
