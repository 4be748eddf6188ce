import { z } from 'zod';
import { commonEnvShape, offlineQuotaEnvShape } from './common.ts';
import { nonNegativeInt, port, positiveInt } from './fields.ts';

export const messageProcessorEnv = z.object({
  ...commonEnvShape,
  PUSHLINE_PROCESSOR_GROUP_ID: z
    .string()
    .default('pushline-message-processor')
    .describe('Kafka consumer group of the message processors.'),
  PUSHLINE_PROCESSOR_INSTANCE_ID: z
    .string()
    .regex(/^[a-zA-Z0-9._-]+$/, 'may only hold letters, digits, ".", "_" and "-"')
    .optional()
    .describe(
      'Id of this processor instance in logs, metrics and its cache-invalidation consumer group. Default: hostname-pid-random.',
    ),
  PUSHLINE_PROCESSOR_HOST: z.string().default('127.0.0.1').describe('Interface of the ops port.'),
  PUSHLINE_PROCESSOR_PORT: port(7080).describe('Ops port: /healthz, /readyz, /metrics. 0 picks a free port.'),
  PUSHLINE_PROCESSOR_MAX_IN_FLIGHT: positiveInt(1000).describe('Deliveries in flight at once per processor.'),
  PUSHLINE_PROCESSOR_PARTITIONS_CONCURRENCY: positiveInt(12).describe(
    'Partitions of the push-requests topic a processor works on at once. Fetching goes on meanwhile; the records of the other partitions wait in their own queues (bounded per partition), so a slow partition never holds up a fast one.',
  ),
  PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS: positiveInt(30000).describe(
    'Kafka group session timeout: how soon the group notices a processor that died and hands its partitions over (the broker allows 6000 and up by default).',
  ),
  PUSHLINE_PROCESSOR_CLAIM_TTL_MS: positiveInt(60000).describe(
    'How long a processor holds a request while delivering it; another processor that gets the same record (after a rebalance) waits this long at most before taking over. A batch claims all its requests up front, so it must exceed the processing of one batch.',
  ),
  PUSHLINE_PROCESSOR_DEDUPE_WINDOW_S: positiveInt(86400).describe(
    'How long a completed request id is remembered, so a redelivered record does not produce a second outcome.',
  ),
  PUSHLINE_MAX_PAYLOAD_BYTES: positiveInt(4096).describe(
    'Largest payload a push request may carry (JSON bytes).',
  ),
  PUSHLINE_DELIVERY_TIMEOUT_MS: positiveInt(5000).describe('Time a device has to ack a message.'),
  PUSHLINE_LOCATOR_CACHE_MAX: positiveInt(100000).describe('Device locations kept in the in-process cache.'),
  PUSHLINE_LOCATOR_CACHE_TTL_MS: nonNegativeInt(60000).describe(
    'Longest a cached device location is trusted; connection events and not_connected answers correct it sooner.',
  ),
  PUSHLINE_OFFLINE_MAX_PER_DEVICE: positiveInt(100).describe(
    'Stored messages kept per offline device; storing more evicts the oldest (recorded expired, reason evicted).',
  ),
  PUSHLINE_OFFLINE_SWEEP_MS: positiveInt(1000).describe(
    'How often expired stored messages are recorded as expired.',
  ),
  PUSHLINE_OFFLINE_SWEEP_BATCH: positiveInt(500).describe('Expired stored messages handled per sweep.'),
  PUSHLINE_OFFLINE_LEASE_MS: positiveInt(30000).describe(
    'How long a drain may hold a stored message before it is handed back to the queue. Must exceed one delivery.',
  ),
  ...offlineQuotaEnvShape,
});
export type MessageProcessorConfig = z.infer<typeof messageProcessorEnv>;
