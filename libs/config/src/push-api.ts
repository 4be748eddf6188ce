import { z } from 'zod';
import { commonEnvShape, internalChannelClientEnvShape, offlineQuotaEnvShape } from './common.ts';
import { port, positiveInt } from './fields.ts';

const API_SCOPES = ['push', 'publish', 'presence', 'admin'] as const;

const apiKeySpec = z.object({
  key: z
    .string()
    .min(16, 'each key must be at least 16 characters')
    .regex(/^[A-Za-z0-9._~-]+$/, 'keys may only hold letters, digits and . _ ~ -'),
  scopes: z.array(z.enum(API_SCOPES)).min(1, 'each key needs at least one scope'),
});

/** `key1:push+publish,key2:admin` → [{ key, scopes }]; a key without `:scopes` is rejected. */
export const apiKeys = z
  .string()
  .transform((spec) =>
    spec
      .split(',')
      .map((entry) => entry.trim())
      .filter((entry) => entry.length > 0)
      .map((entry) => {
        const at = entry.lastIndexOf(':');
        return at < 0
          ? { key: entry, scopes: [] }
          : {
              key: entry.slice(0, at),
              scopes: entry
                .slice(at + 1)
                .split('+')
                .filter(Boolean),
            };
      }),
  )
  .pipe(
    z
      .array(apiKeySpec)
      .min(1, 'must list at least one key')
      .refine((keys) => new Set(keys.map((k) => k.key)).size === keys.length, 'keys must be unique'),
  );

export const pushApiEnv = z.object({
  ...commonEnvShape,
  ...internalChannelClientEnvShape,
  PUSHLINE_API_HOST: z.string().default('0.0.0.0').describe('Interface the HTTP API binds to.'),
  PUSHLINE_API_PORT: port(8080).describe('Port of the HTTP API. 0 picks a free port.'),
  PUSHLINE_API_KEYS: apiKeys.describe(
    'API keys and their scopes: `key1:push+publish+presence,key2:admin`. Keys are at least 16 characters of [A-Za-z0-9._~-]. Scopes: push, publish, presence, admin (admin implies the others).',
  ),
  PUSHLINE_API_RATE_PER_S: positiveInt(1000).describe(
    'Requests per second each API key may make (per push-api instance).',
  ),
  PUSHLINE_API_BURST: positiveInt(2000).describe('Burst size of the per-key rate limit.'),
  PUSHLINE_API_BODY_LIMIT_BYTES: positiveInt(1048576).describe(
    'Largest request body accepted; larger bodies get 413 body-too-large.',
  ),
  PUSHLINE_MAX_PAYLOAD_BYTES: positiveInt(4096).describe(
    'Largest message payload (JSON bytes); larger payloads get 413 payload-too-large.',
  ),
  PUSHLINE_MAX_BATCH: positiveInt(500).describe('Most messages in one async publish batch.'),
  PUSHLINE_DELIVERY_TIMEOUT_MS: positiveInt(5000).describe(
    'Default time a direct push waits for the device ack (a request may ask for up to 30000).',
  ),
  PUSHLINE_API_IDEMPOTENCY_TTL_S: positiveInt(86400).describe(
    'How long an Idempotency-Key of POST /v1/publish is remembered, with the response it got.',
  ),
  PUSHLINE_API_OPS_HOST: z
    .string()
    .default('127.0.0.1')
    .describe('Interface of the ops port (/healthz, /readyz, /metrics), kept off the public API.'),
  PUSHLINE_API_OPS_PORT: port(8081).describe(
    'Ops port of the push-api: /healthz, /readyz, /metrics. 0 picks a free port.',
  ),
  PUSHLINE_API_READY_TIMEOUT_MS: positiveInt(2000).describe(
    'Time /readyz gives each dependency check (Kafka, Redis) before reporting it down.',
  ),
  PUSHLINE_API_PUBLISH_TIMEOUT_MS: positiveInt(3000).describe(
    'Longest POST /v1/publish waits for Kafka to acknowledge; past it the answer is 503 with Retry-After (the outcome is unknown: retry with the same Idempotency-Key).',
  ),
  PUSHLINE_API_DRAIN_TIMEOUT_MS: positiveInt(15000).describe(
    'On shutdown, how long in-flight requests may finish before their connections are closed.',
  ),
  PUSHLINE_OFFLINE_MAX_PER_DEVICE: positiveInt(100).describe(
    'Stored messages kept per offline device (store-and-forward of direct pushes with ttlSeconds).',
  ),
  ...offlineQuotaEnvShape,
});
export type PushApiConfig = z.infer<typeof pushApiEnv>;
