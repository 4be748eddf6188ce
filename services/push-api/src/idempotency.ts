import { createHash, randomUUID } from 'node:crypto';
import type { RedisClient } from '@pushline/registry';
import { z } from 'zod';
import { ProblemError } from './problem.ts';

const StoredEntry = z.discriminatedUnion('state', [
  z.object({ state: z.literal('pending'), token: z.string(), fingerprint: z.string() }),
  /** The request's produce failed or ran past its deadline: Kafka may hold its messages. */
  z.object({ state: z.literal('unknown'), token: z.string(), fingerprint: z.string() }),
  z.object({
    state: z.literal('done'),
    fingerprint: z.string(),
    status: z.number().int(),
    body: z.unknown(),
  }),
]);

interface StoredResponse {
  readonly status: number;
  readonly body: unknown;
}

export type IdempotencyClaim =
  | { readonly kind: 'replay'; readonly response: StoredResponse }
  | {
      readonly kind: 'claimed';
      /** Remembers the response for the retention period. */
      complete(response: StoredResponse): Promise<void>;
      /**
       * Keeps the key for the retention period with the outcome unknown: a retry with the same
       * body takes the claim over and produces the same message ids again; another body is refused.
       * Returns what `completeLate` needs to finish the claim if the produce succeeds after all.
       */
      markUnknown(): Promise<{ completeLate(response: StoredResponse): Promise<void> }>;
      /** Forgets the claim (nothing was produced), so a retry may run. */
      release(): Promise<void>;
    };

export interface IdempotencyStoreOptions {
  readonly redis: RedisClient;
  /** Prefix of the keys, e.g. `pushline:`. */
  readonly keyPrefix: string;
  /** How long a completed response, or a claim whose outcome is unknown, is kept. */
  readonly ttlSeconds: number;
  /** How long an in-progress claim blocks duplicates if its owner dies before finishing. */
  readonly pendingTtlMs: number;
}

// Writes only if the key still holds the value the caller set, so a claim that expired or was
// taken over by another request is never overwritten.
const COMPARE_AND_SET = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`;
const COMPARE_AND_DELETE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** Every script the store sends (each with EVAL and one key), for the cluster slot test. */
export const IDEMPOTENCY_SCRIPTS = {
  compareAndSet: { numberOfKeys: 1, lua: COMPARE_AND_SET },
  compareAndDelete: { numberOfKeys: 1, lua: COMPARE_AND_DELETE },
} as const;

/**
 * Idempotency keys of POST /v1/publish, in Redis: the first request claims the key with SET NX;
 * a duplicate while it runs gets 409, a duplicate after it finished gets the stored response, and
 * the same key with a different body gets 422. A request whose outcome is unknown (Kafka did not
 * answer in time) keeps the key: its retry takes it over and, producing the same message ids, can
 * add no new message. Keys are scoped per API key.
 */
export class IdempotencyStore {
  readonly #options: IdempotencyStoreOptions;

  constructor(options: IdempotencyStoreOptions) {
    this.#options = options;
  }

  async claim(apiKeyId: string, idempotencyKey: string, request: unknown): Promise<IdempotencyClaim> {
    const key = idempotencyRedisKey(this.#options.keyPrefix, apiKeyId, idempotencyKey);
    const fingerprint = sha256(JSON.stringify(request) ?? 'null');
    // Two rounds: the entry may expire, or change hands, between a failed SET NX and the next step.
    for (let round = 0; round < 2; round++) {
      const pending = JSON.stringify({ state: 'pending', token: randomUUID(), fingerprint });
      const set = await this.#options.redis.set(key, pending, 'PX', this.#options.pendingTtlMs, 'NX');
      if (set === 'OK') return this.#claimed(key, pending, fingerprint);
      const raw = await this.#options.redis.get(key);
      if (raw === null) continue;
      const entry = StoredEntry.parse(JSON.parse(raw));
      if (entry.fingerprint !== fingerprint) {
        throw new ProblemError(
          'idempotency-key-reused',
          'This Idempotency-Key was used with a different request body; use a new key.',
        );
      }
      if (entry.state === 'pending') {
        throw new ProblemError(
          'idempotency-conflict',
          'The first request with this Idempotency-Key is still running.',
          {
            retryAfterSeconds: 1,
          },
        );
      }
      if (entry.state === 'unknown') {
        const taken = await this.#options.redis.eval(
          COMPARE_AND_SET,
          1,
          key,
          raw,
          pending,
          this.#options.pendingTtlMs,
        );
        if (taken === 1) return this.#claimed(key, pending, fingerprint);
        continue;
      }
      return { kind: 'replay', response: { status: entry.status, body: entry.body } };
    }
    throw new ProblemError('idempotency-conflict', 'The Idempotency-Key is changing hands; retry.', {
      retryAfterSeconds: 1,
    });
  }

  #claimed(key: string, pending: string, fingerprint: string): IdempotencyClaim {
    const redis = this.#options.redis;
    const ttlMs = this.#options.ttlSeconds * 1000;
    const done = (response: StoredResponse) =>
      JSON.stringify({ state: 'done', fingerprint, status: response.status, body: response.body });
    return {
      kind: 'claimed',
      complete: async (response) => {
        await redis.eval(COMPARE_AND_SET, 1, key, pending, done(response), ttlMs);
      },
      markUnknown: async () => {
        const unknown = JSON.stringify({ state: 'unknown', token: randomUUID(), fingerprint });
        await redis.eval(COMPARE_AND_SET, 1, key, pending, unknown, ttlMs);
        return {
          // Only while no retry has taken the claim over: the retry then records its own answer.
          completeLate: async (response) => {
            await redis.eval(COMPARE_AND_SET, 1, key, unknown, done(response), ttlMs);
          },
        };
      },
      release: async () => {
        await redis.eval(COMPARE_AND_DELETE, 1, key, pending);
      },
    };
  }
}

/**
 * Where the Idempotency-Key of an API key lives: one key per claim, hash-tagged as a whole so a
 * Redis Cluster spreads them over the slots (every command and script touches only this key).
 */
function idempotencyRedisKey(keyPrefix: string, apiKeyId: string, idempotencyKey: string): string {
  return `${keyPrefix}api:idem:{${apiKeyId}:${sha256(idempotencyKey)}}`;
}

/**
 * The id of message `index` of a publish sent with an Idempotency-Key and no message id: the same
 * for every retry of the request, and unique per API key, Idempotency-Key and index. Shaped as a
 * UUID (version 8, RFC 9562) over SHA-256 of the three.
 */
export function idempotentMessageId(apiKeyId: string, idempotencyKey: string, index: number): string {
  const digest = createHash('sha256')
    .update(`pushline-publish\0${apiKeyId}\0${idempotencyKey}\0${index}`, 'utf8')
    .digest();
  digest[6] = ((digest[6] ?? 0) & 0x0f) | 0x80;
  digest[8] = ((digest[8] ?? 0) & 0x3f) | 0x80;
  const hex = digest.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

function sha256(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}
