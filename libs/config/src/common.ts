import { DEFAULT_MAX_JSON_DEPTH, JSON_DEPTH_CEILING } from '@pushline/protocol';
import { z } from 'zod';
import { csv, hostPorts, logLevel, nonNegativeInt, positiveInt } from './fields.ts';

/** Variables every service reads. */
export const commonEnvShape = {
  PUSHLINE_KAFKA_BROKERS: csv(['127.0.0.1:9092']).describe(
    'Comma-separated Kafka bootstrap brokers (host:port).',
  ),
  PUSHLINE_KAFKA_CLIENT_ID: z.string().default('pushline').describe('Kafka client id prefix.'),
  PUSHLINE_TOPIC_PREFIX: z
    .string()
    .regex(/^[a-zA-Z0-9._-]*$/, 'may only hold letters, digits, ".", "_" and "-"')
    .default('pushline.')
    .describe(
      'Prefix of every Kafka topic (connection-events, push-requests, push-requests.dlq, delivery-events).',
    ),
  PUSHLINE_KAFKA_PARTITIONS: positiveInt(12).describe(
    'Partitions used when the platform creates its topics at boot.',
  ),
  PUSHLINE_KAFKA_MIN_REPLICATION_FACTOR: z.coerce
    .number()
    .int()
    .positive()
    .optional()
    .describe(
      'Least replication factor the platform topics that already exist must have, checked at boot (their min.insync.replicas must be at least min(2, this)). Missing topics are created with min(3, brokers) replicas and min.insync.replicas min(2, brokers). Default: min(3, brokers).',
    ),
  PUSHLINE_KAFKA_REPLICATION_CHECK: z
    .enum(['warn', 'refuse'])
    .default('warn')
    .describe(
      'What a service does at boot when an existing platform topic is replicated below the minimum: warn (log and start) or refuse (exit).',
    ),
  PUSHLINE_REDIS_URL: z
    .url({ protocol: /^rediss?$/ })
    .default('redis://127.0.0.1:6379')
    .describe(
      'Redis URL of the device registry, offline store, request ledger, idempotency keys and socket.io adapter. With PUSHLINE_REDIS_CLUSTER_NODES set, only its user name, password and scheme (rediss: TLS) are used, for every cluster node.',
    ),
  PUSHLINE_REDIS_CLUSTER_NODES: hostPorts().describe(
    'Startup nodes of a Redis Cluster (host:port, comma-separated; a few suffice, the client discovers the rest). Set, every service talks to the cluster through the ioredis Cluster client and the socket.io adapter uses sharded pub/sub per shard; unset, one Redis at PUSHLINE_REDIS_URL. Keys are hash-tagged so each script touches one slot (docs/decisions/0022-redis-cluster.md).',
  ),
  PUSHLINE_REDIS_OFFLINE_PARTITIONS: z.coerce
    .number()
    .int()
    .min(1)
    .max(1024)
    .default(64)
    .describe(
      'On a Redis Cluster: partitions of the offline store, each one hash tag with its own sweep sets and outbox stream, spread evenly over the slots (the sweeper and the outbox relays walk all of them). Every service must use the same number, and it must not change while messages are stored. The per-origin quota is kept per partition (its share of PUSHLINE_OFFLINE_QUOTA_*). A single Redis always uses one partition.',
    ),
  PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: positiveInt(3000).describe(
    "Longest a Redis command may take, sent or queued while reconnecting; past it the command fails (a direct push answers 503) instead of waiting on a Redis that stopped answering, and a connection that answered nothing for this long is reconnected. Not applied to the socket.io adapter's subscriber connection, which is idle by design.",
  ),
  PUSHLINE_REDIS_CONNECT_TIMEOUT_MS: positiveInt(3000).describe(
    'Longest a Redis connection attempt may take before it is retried.',
  ),
  PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST: nonNegativeInt(1).describe(
    'Failed reconnect attempts a command issued while Redis is unreachable waits through before it fails; with the command timeout this bounds the offline queue.',
  ),
  PUSHLINE_SHUTDOWN_DEADLINE_MS: positiveInt(25000).describe(
    'Longest a shutdown (SIGTERM/SIGINT) may take; past it the service logs the shutdown step that hung and exits 1. Each step also has its own bound, so one hung dependency does not keep the others open.',
  ),
  PUSHLINE_KEY_PREFIX: z
    .string()
    .default('pushline:')
    .describe('Prefix of every Redis key and channel the platform writes.'),
  PUSHLINE_INTERNAL_TOKEN: z
    .string()
    .min(16, 'must be at least 16 characters')
    .describe(
      "Shared secret that services present to each other at the internal channel's handshake (deliveries, broadcasts, device-to-device).",
    ),
  PUSHLINE_MAX_JSON_DEPTH: positiveInt(DEFAULT_MAX_JSON_DEPTH)
    .pipe(z.number().max(JSON_DEPTH_CEILING, `must be at most ${JSON_DEPTH_CEILING}`))
    .describe(
      `Deepest nesting of arrays and objects accepted in any JSON the platform takes in (HTTP bodies, device frames, Kafka records); deeper input is refused as invalid. At most ${JSON_DEPTH_CEILING}.`,
    ),
  PUSHLINE_LOG_LEVEL: logLevel.describe('Log level: fatal, error, warn, info, debug, trace or silent.'),
} as const;

/** Per-origin (API key) bounds of the offline store, read by every service that stores messages. */
export const offlineQuotaEnvShape = {
  PUSHLINE_OFFLINE_QUOTA_MESSAGES: positiveInt(100000).describe(
    'Stored messages (store-and-forward) one API key may have in Redis at once, over all devices; past it a store is refused (quota-exceeded).',
  ),
  PUSHLINE_OFFLINE_QUOTA_BYTES: positiveInt(268435456).describe(
    'Bytes of stored messages (their JSON) one API key may have in Redis at once; past it a store is refused (quota-exceeded).',
  ),
} as const;

/** Read by every service that calls connection servers over the internal channel. */
export const internalChannelClientEnvShape = {
  PUSHLINE_INTERNAL_TLS_CA: z
    .string()
    .min(1)
    .optional()
    .describe(
      "Path of a PEM file with the certificate(s) trusted for connection servers' internal ports when they serve TLS (an https PUSHLINE_INTERNAL_URL). Default: the system's trusted roots.",
    ),
} as const;

export const commonEnv = z.object(commonEnvShape);
export type CommonConfig = z.infer<typeof commonEnv>;

/** Kafka topic names derived from the prefix, so tests and tenants can isolate themselves. */
export function topicNames(prefix: string) {
  return {
    connectionEvents: `${prefix}connection-events`,
    pushRequests: `${prefix}push-requests`,
    pushRequestsDlq: `${prefix}push-requests.dlq`,
    deliveryEvents: `${prefix}delivery-events`,
  } as const;
}
export type TopicNames = ReturnType<typeof topicNames>;

/** Variables of the services that consume from Kafka (the message processor, the console). */
export const kafkaConsumerEnvShape = {
  PUSHLINE_KAFKA_FETCH_WAIT_MS: z.coerce
    .number()
    .int()
    .min(10)
    .max(10_000)
    .default(500)
    .describe(
      "Longest a consumer's fetch waits at the broker for records (kafkajs maxWaitTimeInMs): the console's consumers and the message processor's connection-event consumer (its push-request consumer, which pauses partitions for backpressure, keeps 100 ms). A record that arrives ends the wait at once; the wait sets what an idle consumer costs (one fetch per wait, in the service and in the broker) and how long close() can wait for the fetch in flight.",
    ),
} as const;
