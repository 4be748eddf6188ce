import { performance } from 'node:perf_hooks';
import type { DeviceConnection } from './connection.ts';

/** A token bucket: `ratePerS` tokens a second, at most `burst` saved up. */
export class TokenBucket {
  readonly #ratePerMs: number;
  readonly #burst: number;
  #tokens: number;
  #at: number;

  constructor(ratePerS: number, burst: number, now = performance.now()) {
    this.#ratePerMs = ratePerS / 1000;
    this.#burst = burst;
    this.#tokens = burst;
    this.#at = now;
  }

  take(now = performance.now()): boolean {
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) * this.#ratePerMs);
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

/**
 * One token bucket per connection, made on the connection's first request: most connections never
 * send one, and a bucket costs memory. Held weakly, so it goes with its connection.
 */
export class ConnectionRateLimit {
  readonly ratePerS: number;
  readonly burst: number;
  readonly #buckets = new WeakMap<DeviceConnection, TokenBucket>();

  constructor(ratePerS: number, burst: number) {
    this.ratePerS = ratePerS;
    this.burst = burst;
  }

  /** Takes one token from the connection's bucket; false when it is empty. */
  take(conn: DeviceConnection): boolean {
    let bucket = this.#buckets.get(conn);
    if (!bucket) {
      bucket = new TokenBucket(this.ratePerS, this.burst);
      this.#buckets.set(conn, bucket);
    }
    return bucket.take();
  }
}
