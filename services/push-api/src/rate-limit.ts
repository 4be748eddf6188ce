import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { principalOf } from './auth.ts';
import { ProblemError } from './problem.ts';
import { TokenBucket, type TokenBucketOptions } from '@pushline/runtime';

/**
 * One bucket per API key, in this process. Buckets are keyed by the key fingerprint; there are
 * only as many as configured keys, so the map needs no eviction.
 */
export class KeyRateLimiter {
  readonly #options: TokenBucketOptions;
  readonly #buckets = new Map<string, TokenBucket>();
  readonly #now: () => number;

  constructor(options: TokenBucketOptions, now: () => number = Date.now) {
    this.#options = options;
    this.#now = now;
  }

  take(keyId: string): { ok: true } | { ok: false; retryAfterSeconds: number } {
    const now = this.#now();
    let bucket = this.#buckets.get(keyId);
    if (!bucket) {
      bucket = new TokenBucket(this.#options, now);
      this.#buckets.set(keyId, bucket);
    }
    const waitMs = bucket.take(now);
    return waitMs === 0
      ? { ok: true }
      : { ok: false, retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)) };
  }
}

/** 429 `rate-limited` with Retry-After once the caller's bucket is empty. Runs after `authenticate`. */
export function rateLimit(limiter: KeyRateLimiter, onLimited?: () => void): RequestHandler {
  return (_req: Request, res: Response, next: NextFunction) => {
    const result = limiter.take(principalOf(res).id);
    if (!result.ok) {
      onLimited?.();
      throw new ProblemError('rate-limited', `Retry in ${result.retryAfterSeconds} s.`, {
        retryAfterSeconds: result.retryAfterSeconds,
      });
    }
    next();
  };
}
