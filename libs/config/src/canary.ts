import { z } from 'zod';
import { commonEnvShape } from './common.ts';
import { connectionServerEnv } from './connection-server.ts';
import { messageProcessorEnv } from './message-processor.ts';
import { port, positiveInt } from './fields.ts';

const server = connectionServerEnv.shape;

/**
 * The canary: a prober that keeps one device connected to every connection server, pushes to it
 * and publishes to it through the API, and measures the processors' consumer lag from the broker.
 * It reads the platform's Kafka, Redis, topic and key settings, and signs its own device tokens.
 */
export const canaryEnv = z.object({
  PUSHLINE_KAFKA_BROKERS: commonEnvShape.PUSHLINE_KAFKA_BROKERS,
  PUSHLINE_KAFKA_CLIENT_ID: commonEnvShape.PUSHLINE_KAFKA_CLIENT_ID,
  PUSHLINE_TOPIC_PREFIX: commonEnvShape.PUSHLINE_TOPIC_PREFIX,
  PUSHLINE_REDIS_URL: commonEnvShape.PUSHLINE_REDIS_URL,
  PUSHLINE_REDIS_CLUSTER_NODES: commonEnvShape.PUSHLINE_REDIS_CLUSTER_NODES,
  PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: commonEnvShape.PUSHLINE_REDIS_COMMAND_TIMEOUT_MS,
  PUSHLINE_REDIS_CONNECT_TIMEOUT_MS: commonEnvShape.PUSHLINE_REDIS_CONNECT_TIMEOUT_MS,
  PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST: commonEnvShape.PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST,
  PUSHLINE_KEY_PREFIX: commonEnvShape.PUSHLINE_KEY_PREFIX,
  PUSHLINE_LOG_LEVEL: commonEnvShape.PUSHLINE_LOG_LEVEL,
  PUSHLINE_SHUTDOWN_DEADLINE_MS: commonEnvShape.PUSHLINE_SHUTDOWN_DEADLINE_MS,
  PUSHLINE_PROCESSOR_GROUP_ID: messageProcessorEnv.shape.PUSHLINE_PROCESSOR_GROUP_ID,
  // Required here: the canary signs its devices' tokens (HS256) with the servers' secret.
  PUSHLINE_DEVICE_JWT_SECRET: server.PUSHLINE_DEVICE_JWT_SECRET.unwrap().describe(
    "HS256 secret for device tokens (the canary needs it to sign its own devices' tokens).",
  ),
  PUSHLINE_DEVICE_JWT_ISSUER: server.PUSHLINE_DEVICE_JWT_ISSUER,
  PUSHLINE_DEVICE_JWT_AUDIENCE: server.PUSHLINE_DEVICE_JWT_AUDIENCE,
  PUSHLINE_CANARY_API_URL: z
    .url({ protocol: /^https?$/ })
    .default('http://127.0.0.1:8080')
    .describe('Base URL of the push API the canary pushes and publishes through.'),
  PUSHLINE_CANARY_API_KEY: z
    .string()
    .min(16, 'must be at least 16 characters')
    .describe('API key of the canary; needs the push and publish scopes.'),
  PUSHLINE_CANARY_HOST: z.string().default('127.0.0.1').describe('Interface of the canary ops port.'),
  PUSHLINE_CANARY_PORT: port(7090).describe(
    'Canary ops port: /healthz, /readyz, /metrics. 0 picks a free port.',
  ),
  PUSHLINE_CANARY_INTERVAL_MS: positiveInt(5000).describe(
    'Pause between probe rounds; each round sends one direct push and one async publish to the canary device on every connection server, and reads the consumer lag.',
  ),
  PUSHLINE_CANARY_TIMEOUT_MS: positiveInt(10000).describe(
    'How long a probe waits for its message at the canary device before it counts as failed.',
  ),
  PUSHLINE_CANARY_FORGET_AFTER_MS: positiveInt(600000).describe(
    'A connection server whose load report vanished without draining first (a crash) is still probed, and reported failing, for this long.',
  ),
  PUSHLINE_CANARY_DEVICE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9._:@-]*$/, 'may only hold letters, digits and . _ : @ -')
    .default('pushline-canary.')
    .describe(
      'Prefix of the canary devices (one per connection server: <prefix><server id>) and of their user id.',
    ),
});
export type CanaryConfig = z.infer<typeof canaryEnv>;
