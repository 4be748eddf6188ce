import {
  DELIVER_BATCH_MAX,
  type BroadcastRequest,
  type BroadcastResult,
  type DeliverRequest,
  type DeliverResult,
} from '@pushline/protocol';
import type { DeliveryTransport } from './types.ts';

/** A transport that can hand many deliveries to one server in one exchange. */
export interface BatchDeliveryTransport extends DeliveryTransport {
  /** One result per request, in request order; the same outcomes and errors as `deliver`. */
  deliverMany(serverUrl: string, reqs: readonly DeliverRequest[]): Promise<DeliverResult[]>;
}

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
 * Turns the `deliver` calls made within one turn of the event loop into one `deliverMany` per
 * connection server, for callers with many deliveries in flight at once (the message processor).
 * Each call still gets its own result or error. Calls are not ordered against each other, exactly
 * like concurrent `deliver` calls: a caller that needs per-device order waits for one delivery's
 * result before starting the next.
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
    const reqs = queue.map((w) => w.req);
    const sent =
      queue.length === 1
        ? this.#inner.deliver(serverUrl, reqs[0] as DeliverRequest).then((r) => [r])
        : this.#inner.deliverMany(serverUrl, reqs);
    sent.then(
      (results) => queue.forEach((w, i) => w.resolve(results[i] as DeliverResult)),
      (err: unknown) => {
        for (const w of queue) w.reject(err);
      },
    );
  }
}
