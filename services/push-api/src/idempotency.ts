import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { ProblemError } from './problem.ts';

const StoredEntry = z.discriminatedUnion('state', [
  z.object({ state: z.literal('pending'), token: z.string(), fingerprint: z.string() }),
  z.object({
    state: z.literal('done'),
    fingerprint: z.string(),
    status: z.number().int(),
    body: z.unknown(),
  }),
]);

export interface StoredResponse {
  readonly status: number;
  readonly body: unknown;
}

export type IdempotencyClaim =
  | { readonly kind: 'replay'; readonly response: StoredResponse }
  | {
      readonly kind: 'claimed';
      /** Remembers the response for the retention period. */
      complete(response: StoredResponse): Promise<void>;
      /** Forgets the claim (the request failed), so a retry may run. */
      release(): Promise<void>;
    };

export interface IdempotencyStoreOptions {
  readonly redis: Redis;
  /** Prefix of the keys, e.g. `pushline:`. */
  readonly keyPrefix: string;
  /** How long a completed response is replayed. */
  readonly ttlSeconds: number;
  /** How long an in-progress claim blocks duplicates if its owner dies before finishing. */
  readonly pendingTtlMs: number;
}

// Writes only if the key still holds our pending claim, so a claim that expired and was taken
// over by another request is never overwritten.
const COMPARE_AND_SET = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`;
const COMPARE_AND_DELETE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * Idempotency keys of POST /v1/publish, in Redis: the first request claims the key with SET NX;
 * a duplicate while it runs gets 409, a duplicate after it finished gets the stored response, and
 * the same key with a different body gets 422. Keys are scoped per API key.
 */
export class IdempotencyStore {
  readonly #o: IdempotencyStoreOptions;

  constructor(options: IdempotencyStoreOptions) {
    this.#o = options;
  }

  async claim(apiKeyId: string, idempotencyKey: string, request: unknown): Promise<IdempotencyClaim> {
    const key = `${this.#o.keyPrefix}api:idem:${apiKeyId}:${sha256(idempotencyKey)}`;
    const fingerprint = sha256(JSON.stringify(request) ?? 'null');
    // Two rounds: the entry may expire between a failed SET NX and the GET.
    for (let round = 0; round < 2; round++) {
      const pending = JSON.stringify({ state: 'pending', token: randomUUID(), fingerprint });
      const set = await this.#o.redis.set(key, pending, 'PX', this.#o.pendingTtlMs, 'NX');
      if (set === 'OK') return this.#claimed(key, pending, fingerprint);
      const raw = await this.#o.redis.get(key);
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
      return { kind: 'replay', response: { status: entry.status, body: entry.body } };
    }
    throw new ProblemError('idempotency-conflict', 'The Idempotency-Key is changing hands; retry.', {
      retryAfterSeconds: 1,
    });
  }

  #claimed(key: string, pending: string, fingerprint: string): IdempotencyClaim {
    const redis = this.#o.redis;
    const ttlMs = this.#o.ttlSeconds * 1000;
    return {
      kind: 'claimed',
      complete: async (response) => {
        const done = JSON.stringify({
          state: 'done',
          fingerprint,
          status: response.status,
          body: response.body,
        });
        await redis.eval(COMPARE_AND_SET, 1, key, pending, done, ttlMs);
      },
      release: async () => {
        await redis.eval(COMPARE_AND_DELETE, 1, key, pending);
      },
    };
  }
}

function sha256(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}
