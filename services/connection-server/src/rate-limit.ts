import { performance } from 'node:perf_hooks';
import { TokenBucket } from '@pushline/runtime';
import type { DeviceConnection } from './connection.ts';

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
      bucket = new TokenBucket({ ratePerSecond: this.ratePerS, burst: this.burst }, performance.now());
      this.#buckets.set(conn, bucket);
    }
    return bucket.take(performance.now()) === 0;
  }
}
