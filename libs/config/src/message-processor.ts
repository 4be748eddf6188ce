import { z } from 'zod';
import {
  commonEnvShape,
  internalChannelClientEnvShape,
  kafkaConsumerEnvShape,
  offlineQuotaEnvShape,
} from './common.ts';
import { nonNegativeInt, port, positiveInt } from './fields.ts';

export const messageProcessorEnv = z.object({
  ...commonEnvShape,
  ...kafkaConsumerEnvShape,
  ...internalChannelClientEnvShape,
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
  PUSHLINE_PROCESSOR_MAX_IN_FLIGHT: positiveInt(1000).describe(
    'Push requests a processor works on at once, over all its partitions. A request waiting behind an earlier one of its Kafka key (its device, user or topic) does not count.',
  ),
  PUSHLINE_PROCESSOR_PARTITIONS_CONCURRENCY: positiveInt(12).describe(
    'Partitions of the push-requests topic whose next batch a processor takes in at once (decodes and claims). Records of a partition then run concurrently, one key after another, so a slow device holds up only its own later messages.',
  ),
  PUSHLINE_PROCESSOR_MAX_UNFINISHED_PER_PARTITION: positiveInt(1000).describe(
    'Records of one partition a processor holds unfinished (running, or waiting behind an earlier record of their key); at this many it takes no more of that partition until some finish. The committed offset is the lowest unfinished record: after a crash the next owner reads again from there, and the request ledger skips what had finished.',
  ),
  PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS: positiveInt(30000).describe(
    'Kafka group session timeout: how soon the group notices a processor that died and hands its partitions over (the broker allows 6000 and up by default).',
  ),
  PUSHLINE_PROCESSOR_CLAIM_TTL_MS: z.coerce
    .number()
    .int()
    .positive()
    .optional()
    .describe(
      'How long a request claim outlives its holder: the holder renews it every third of this while it works on the request, so a processor that died gives its requests up this long after its last renewal. Default: PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS, so the claims of a dead processor have expired by the time the group hands its partitions over.',
    ),
  PUSHLINE_PROCESSOR_MAX_ATTEMPTS: positiveInt(3).describe(
    'Times decoding or handling one record may throw, while Redis and Kafka answer, before it is dead-lettered (reason processing_failed) and its partition moves on. Failures of Redis or Kafka themselves pause the processor instead and are not counted.',
  ),
  PUSHLINE_PROCESSOR_MAX_RECORD_BYTES: positiveInt(65536).describe(
    'Largest push-requests record value the processor parses; a larger one is dead-lettered (payload_too_large) unread.',
  ),
  PUSHLINE_PROCESSOR_STALL_AFTER_MS: positiveInt(60000).describe(
    'A partition with records in hand that has finished none of them for this long is reported stalled: /readyz answers 503 and pushline_processor_partition_stalled_seconds shows it.',
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
