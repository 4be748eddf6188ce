import {
  DELIVER_BATCH_MAX,
  type BroadcastRequest,
  type BroadcastResult,
  type DeliverRequest,
  type DeliverResult,
} from '@pushline/protocol';
import { injectTraceHeaders } from '@pushline/telemetry';
import type { BatchDeliveryTransport, DeliveryTransport } from './types.ts';

export interface CoalescingDeliveryTransportOptions {
  readonly transport: BatchDeliveryTransport;
  /** Most deliveries per exchange. Default `DELIVER_BATCH_MAX` (500). */
  readonly maxBatch?: number;
}

interface Waiting {
  readonly req: DeliverRequest;
  readonly resolve: (result: DeliverResult) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Turns the `deliver` calls made within one turn of the event loop into one `deliverEach` per
 * connection server, for callers with many deliveries in flight at once (push-api, the message
 * processor, device-to-device). Each call still gets its own result or error, as soon as its own
 * device has answered: a slow device in the same exchange does not hold the others back. Calls
 * are not ordered against each other, exactly like concurrent `deliver` calls: a caller that
 * needs per-device order waits for one delivery's result before starting the next.
 */
export class CoalescingDeliveryTransport implements DeliveryTransport {
  readonly #inner: BatchDeliveryTransport;
  readonly #maxBatch: number;
  readonly #pending = new Map<string, Waiting[]>();
  #scheduled = false;

  constructor(options: CoalescingDeliveryTransportOptions) {
    this.#inner = options.transport;
    this.#maxBatch = Math.max(1, Math.min(options.maxBatch ?? DELIVER_BATCH_MAX, DELIVER_BATCH_MAX));
  }

  deliver(serverUrl: string, req: DeliverRequest): Promise<DeliverResult> {
    // The exchange starts later, in another caller's context: each item takes its own trace now.
    if (req.trace === undefined) {
      const trace = injectTraceHeaders();
      if (trace.traceparent) req = { ...req, trace };
    }
    return new Promise<DeliverResult>((resolve, reject) => {
      let queue = this.#pending.get(serverUrl);
      if (!queue) {
        queue = [];
        this.#pending.set(serverUrl, queue);
      }
      queue.push({ req, resolve, reject });
      if (queue.length >= this.#maxBatch) {
        this.#pending.delete(serverUrl);
        this.#send(serverUrl, queue);
      } else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  broadcast(serverUrl: string, req: BroadcastRequest): Promise<BroadcastResult> {
    return this.#inner.broadcast(serverUrl, req);
  }

  /** Closes the wrapped transport; deliveries still queued settle through it (as errors). */
  async close(): Promise<void> {
    this.#flush();
    await this.#inner.close();
  }

  #flush(): void {
    this.#scheduled = false;
    const batches = [...this.#pending];
    this.#pending.clear();
    for (const [serverUrl, queue] of batches) this.#send(serverUrl, queue);
  }

  #send(serverUrl: string, queue: readonly Waiting[]): void {
    try {
      this.#sendOrThrow(serverUrl, queue);
    } catch (err) {
      // A synchronous throw must not strand these callers, nor the other servers' queues of a flush.
      for (const w of queue) w.reject(err);
    }
  }

  #sendOrThrow(serverUrl: string, queue: readonly Waiting[]): void {
    const [only] = queue;
    if (only && queue.length === 1) {
      this.#inner.deliver(serverUrl, only.req).then(only.resolve, only.reject);
      return;
    }
    const results = this.#inner.deliverEach(
      serverUrl,
      queue.map((w) => w.req),
    );
    queue.forEach((w, i) => {
      const result = results[i];
      if (result) result.then(w.resolve, w.reject);
      else w.reject(new Error(`deliverEach gave ${results.length} results for ${queue.length} requests`));
    });
  }
}
