import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { principalOf } from './auth.ts';
import { ProblemError } from './problem.ts';

export interface TokenBucketOptions {
  /** Tokens added per second. */
  readonly ratePerSecond: number;
  /** Most tokens held; the largest burst allowed after a quiet period. */
  readonly burst: number;
}

/** A token bucket that refills lazily on each take, so idle buckets cost no timers. */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #updatedAt: number;

  constructor(options: TokenBucketOptions, now: number) {
    this.#rate = options.ratePerSecond;
    this.#burst = options.burst;
    this.#tokens = options.burst;
    this.#updatedAt = now;
  }

  /** Takes one token; when none is left, says how many whole seconds until one is. */
  take(now: number): { ok: true } | { ok: false; retryAfterSeconds: number } {
    const elapsedS = Math.max(0, now - this.#updatedAt) / 1000;
    this.#tokens = Math.min(this.#burst, this.#tokens + elapsedS * this.#rate);
    this.#updatedAt = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - this.#tokens) / this.#rate)) };
  }
}

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
    return bucket.take(now);
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
