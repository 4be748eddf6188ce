/**
 * Exponential backoff with full jitter: a uniformly random delay in [0, min(max, initial·2^attempt)).
 * Written here rather than imported from @pushline/runtime because the SDK runs in browsers and
 * must not pull the server runtime (pino, OpenTelemetry) into the bundle.
 */
export function fullJitterDelayMs(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(Math.max(0, attempt), 30));
  return Math.floor(random() * ceiling);
}
