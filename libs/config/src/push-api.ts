import { z } from 'zod';
import { commonEnvShape } from './common.ts';
import { port, positiveInt } from './fields.ts';

export const pushApiEnv = z.object({
  ...commonEnvShape,
  PUSHLINE_API_HOST: z.string().default('0.0.0.0').describe('Interface the HTTP API binds to.'),
  PUSHLINE_API_PORT: port(8080).describe('Port of the HTTP API. 0 picks a free port.'),
  PUSHLINE_API_KEYS: z
    .string()
    .describe(
      'API keys and their scopes: `key1:push+publish+presence,key2:admin`. Scopes: push, publish, presence, admin.',
    ),
  PUSHLINE_API_RATE_PER_S: positiveInt(1000).describe('Requests per second each API key may make.'),
  PUSHLINE_API_BURST: positiveInt(2000).describe('Burst size of the per-key rate limit.'),
  PUSHLINE_API_BODY_LIMIT_BYTES: positiveInt(1048576).describe('Largest request body accepted.'),
  PUSHLINE_MAX_PAYLOAD_BYTES: positiveInt(4096).describe('Largest message payload (JSON bytes).'),
  PUSHLINE_MAX_BATCH: positiveInt(500).describe('Most messages in one async publish batch.'),
  PUSHLINE_DELIVERY_TIMEOUT_MS: positiveInt(5000).describe(
    'Default time a direct push waits for the device ack.',
  ),
});
export type PushApiConfig = z.infer<typeof pushApiEnv>;
