export interface TokenBucketOptions {
  /** Tokens added per second. */
  readonly ratePerSecond: number;
  /** Most tokens held: the largest burst allowed after a quiet period. */
  readonly burst: number;
}

/**
 * The platform's one token bucket (API keys in push-api, device requests and device-to-device
 * sends in the connection server). It refills lazily on each take, so an idle bucket costs no timer;
 * the caller passes the clock so each user keeps its own (wall clock or `performance.now()`).
 */
export class TokenBucket {
  readonly #ratePerMs: number;
  readonly #burst: number;
  #tokens: number;
  #updatedAtMs: number;

  constructor(options: TokenBucketOptions, nowMs: number) {
    if (!(options.ratePerSecond > 0) || !(options.burst >= 1)) {
      throw new RangeError(
        `a token bucket needs ratePerSecond > 0 and burst >= 1, got ${options.ratePerSecond}/${options.burst}`,
      );
    }
    this.#ratePerMs = options.ratePerSecond / 1000;
    this.#burst = options.burst;
    this.#tokens = options.burst;
    this.#updatedAtMs = nowMs;
  }

  /** Takes one token. Returns 0 when it did, otherwise how many milliseconds until one is there. */
  take(nowMs: number): number {
    const elapsedMs = Math.max(0, nowMs - this.#updatedAtMs);
    this.#tokens = Math.min(this.#burst, this.#tokens + elapsedMs * this.#ratePerMs);
    this.#updatedAtMs = nowMs;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return (1 - this.#tokens) / this.#ratePerMs;
  }
}
