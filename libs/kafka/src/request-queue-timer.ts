import { createRequire } from 'node:module';

/** The parts of kafkajs's per-connection request queue (`src/network/requestQueue`) used here. */
interface RequestQueueInternals {
  readonly pending: readonly unknown[];
  readonly throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
  scheduleCheckPendingRequests(): void;
}

/** How often kafkajs looks again at a request queued behind the in-flight limit (its own interval). */
const QUEUED_CHECK_MS = 10;

let installed = false;

/**
 * kafkajs 2.2.4 (unmaintained) arms a timer on every broker connection after each response,
 * whether or not a request waits: unthrottled, its delay is negative, Node runs it after 1 ms
 * (the `TimeoutNegativeWarning`), and it arms itself again. Every connection that ever got a
 * response then wakes about 900 times a second for as long as it lives: measured, one idle producer
 * connection costs 25 ms of CPU a second (docs/performance.md, "kafkajs's idle 1 ms timer"). This
 * replaces that method, once per process, with one that arms the timer only while a request
 * waits: until the broker's throttle ends, or every 10 ms behind the in-flight limit, as kafkajs
 * does. A response and a new request still look at the queue themselves, as before.
 */
export function armQueueChecksOnlyWhenQueued(): void {
  if (installed) return;
  installed = true;
  const require = createRequire(import.meta.url);
  const RequestQueue = require('kafkajs/src/network/requestQueue/index.js') as {
    prototype: RequestQueueInternals;
  };
  RequestQueue.prototype.scheduleCheckPendingRequests = function (this: RequestQueueInternals) {
    if (this.throttleCheckTimeoutId !== null || this.pending.length === 0) return;
    const throttledForMs = this.throttledUntil - Date.now();
    this.throttleCheckTimeoutId = setTimeout(
      () => {
        this.throttleCheckTimeoutId = null;
        this.checkPendingRequests();
      },
      throttledForMs > 0 ? throttledForMs : QUEUED_CHECK_MS,
    );
  };
}
