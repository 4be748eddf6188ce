import type { Kafka, Message, Producer as KjsProducer, TopicMessages } from 'kafkajs';
import type { Logger } from '@pushline/telemetry';
import { ProduceError, SendWithdrawnError } from './errors.ts';
import { javaCompatiblePartitioner } from './partitioner.ts';
import type { OutgoingRecord, Producer, SendOptions } from './types.ts';

/**
 * Most record bytes (keys, values, headers) one produce request carries when it joins several
 * sends; a single larger send still goes alone. Below the broker's default `message.max.bytes`
 * (1 MiB per partition batch), so joining sends never turns one that fits into one refused.
 */
const MAX_JOINED_REQUEST_BYTES = 512 * 1024;

/** How long close() lets the produce request in flight finish before disconnecting. */
const CLOSE_GRACE_MS = 2_000;

interface PendingSend {
  readonly topic: string;
  readonly records: readonly OutgoingRecord[];
  readonly bytes: number;
  resolve: () => void;
  reject: (err: ProduceError) => void;
}

export interface KafkajsProducerOptions {
  /** Called when the producer id is given up after a failed send (a new one serves the next send). */
  readonly onReset?: (cause: unknown) => void;
}

/**
 * The kafkajs idempotent producer behind `Producer`, made safe against what kafkajs does after a
 * failed produce. kafkajs numbers each partition's batches (the broker drops a batch whose
 * numbers it has already written, and refuses one that skips ahead); when a produce request
 * fails, it takes the numbers back and gives them to the next batch, though the broker may have
 * written the failed one (the broker died or the connection broke after the write, a request
 * timed out). The next batch then either carries the same numbers as a batch the broker holds
 * (same record count: the broker answers "duplicate", kafkajs reports success, and the records are
 * silently lost) or numbers behind the broker's (OUT_OF_ORDER_SEQUENCE_NUMBER on every later
 * produce, forever: tulios/kafkajs#598).
 *
 * So here: one produce request is in flight at a time (concurrent sends wait and go together in
 * the next request, so throughput comes from batching), kafkajs's own retries of that request keep
 * its numbers and records together (a retry of a written batch is recognised as a duplicate,
 * correctly), and after any failed send the producer id is given up: the next send runs on a new
 * kafkajs producer, with a new producer id whose numbering starts afresh. A failed send's outcome
 * is unknown (`ProduceError`); nothing sent after it can be taken for it.
 */
export class KafkajsProducer implements Producer {
  readonly #kafka: Kafka;
  readonly #log: Logger;
  readonly #options: KafkajsProducerOptions;
  /** The producer (one producer id) sends go to, connected or connecting; replaced after a failure. */
  #current: { readonly producer: KjsProducer; readonly ready: Promise<KjsProducer> } | undefined;
  #queue: PendingSend[] = [];
  #sending = false;
  #draining: Promise<void> = Promise.resolve();
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(kafka: Kafka, log: Logger, options: KafkajsProducerOptions = {}) {
    this.#kafka = kafka;
    this.#log = log;
    this.#options = options;
  }

  async start(): Promise<void> {
    await this.#producer();
  }

  send(topic: string, records: readonly OutgoingRecord[], options: SendOptions = {}): Promise<void> {
    if (records.length === 0) return Promise.resolve();
    if (this.#closed)
      return Promise.reject(new ProduceError(topic, records.length, new Error('the producer is closed')));
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(new SendWithdrawnError(topic, records.length));
    return new Promise<void>((resolve, reject) => {
      const pending: PendingSend = { topic, records, bytes: recordBytes(records), resolve, reject };
      if (signal) {
        // Withdrawn only while it waits in the queue; once taken into a request it runs its course.
        const withdraw = () => {
          const at = this.#queue.indexOf(pending);
          if (at >= 0) {
            this.#queue.splice(at, 1);
            reject(new SendWithdrawnError(topic, records.length));
          }
        };
        signal.addEventListener('abort', withdraw, { once: true });
        const settled = () => signal.removeEventListener('abort', withdraw);
        pending.resolve = () => {
          settled();
          resolve();
        };
        pending.reject = (err) => {
          settled();
          reject(err);
        };
      }
      this.#queue.push(pending);
      this.#kick();
    });
  }

  /**
   * Stops taking sends and refuses the ones still waiting (never sent, so certainly not written).
   * The request in flight gets `CLOSE_GRACE_MS` to finish, then the producer disconnects, which
   * ends its retries: against a broker that is down, close() must not wait out the retry budget.
   */
  close(): Promise<void> {
    this.#closed = true;
    return (this.#closing ??= (async () => {
      for (const p of this.#queue.splice(0))
        p.reject(
          new ProduceError(p.topic, p.records.length, new Error('the producer closed before sending')),
        );
      await withinGrace(this.#draining);
      const current = this.#current;
      this.#current = undefined;
      // Disconnected whether or not it finished connecting: a connect still retrying against a
      // dead broker would otherwise hold close() for its whole retry budget.
      if (current) await withinGrace(current.producer.disconnect().catch(() => undefined));
      // The request in flight fails on the disconnect; its caller hears of it whenever kafkajs lets go.
      await withinGrace(this.#draining);
    })());
  }

  #kick(): void {
    if (this.#sending) return;
    this.#sending = true;
    this.#draining = this.#drain();
  }

  async #drain(): Promise<void> {
    try {
      for (;;) {
        const group = this.#takeGroup();
        if (group.length === 0) return;
        await this.#sendGroup(group);
      }
    } finally {
      // Runs as the loop returns, in the same tick: a send queued after this starts a new drain.
      this.#sending = false;
    }
  }

  /** The oldest waiting send, and the ones after it that fit in the same request. */
  #takeGroup(): PendingSend[] {
    const group: PendingSend[] = [];
    let bytes = 0;
    while (this.#queue.length > 0) {
      const next = this.#queue[0] as PendingSend;
      if (group.length > 0 && bytes + next.bytes > MAX_JOINED_REQUEST_BYTES) break;
      group.push(next);
      bytes += next.bytes;
      this.#queue.shift();
    }
    return group;
  }

  async #sendGroup(group: readonly PendingSend[]): Promise<void> {
    try {
      const producer = await this.#producer();
      await producer.sendBatch({ acks: -1, topicMessages: byTopic(group) });
      for (const p of group) p.resolve();
    } catch (err) {
      for (const p of group) p.reject(new ProduceError(p.topic, p.records.length, err));
      this.#reset(err);
    }
  }

  #producer(): Promise<KjsProducer> {
    if (this.#current) return this.#current.ready;
    const producer = this.#kafka.producer({
      createPartitioner: javaCompatiblePartitioner,
      allowAutoTopicCreation: false,
      idempotent: true,
    });
    const connecting = producer.connect().then(() => producer);
    const current = { producer, ready: connecting };
    this.#current = current;
    connecting.catch(() => {
      // A producer that never connected is dropped; the next send creates another.
      if (this.#current === current) this.#current = undefined;
      producer.disconnect().catch(() => undefined);
    });
    return connecting;
  }

  /** Gives up the current producer id: its batch numbering may no longer match the broker's. */
  #reset(cause: unknown): void {
    const current = this.#current;
    if (!current) return;
    this.#current = undefined;
    current.producer
      .disconnect()
      .catch((err: unknown) => this.#log.debug({ err }, 'disconnecting a reset producer failed'));
    this.#log.warn(
      { err: cause },
      'a produce request failed; the next send gets a new producer id (its records may or may not have been written)',
    );
    this.#options.onReset?.(cause);
  }
}

/** Waits for `work`, at most `CLOSE_GRACE_MS`. */
async function withinGrace(work: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work, new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_GRACE_MS)))]);
  clearTimeout(timer);
}

function recordBytes(records: readonly OutgoingRecord[]): number {
  let bytes = 0;
  for (const r of records) {
    bytes += byteLength(r.key) + byteLength(r.value);
    if (r.headers) for (const [k, v] of Object.entries(r.headers)) bytes += byteLength(k) + byteLength(v);
  }
  return bytes;
}

function byteLength(value: string | Buffer | null): number {
  if (value === null) return 0;
  return typeof value === 'string' ? Buffer.byteLength(value) : value.length;
}

/** One entry per topic (kafkajs keeps only the last entry of a repeated topic), records in send order. */
function byTopic(group: readonly PendingSend[]): TopicMessages[] {
  const messages = new Map<string, Message[]>();
  for (const p of group) {
    const list = messages.get(p.topic) ?? [];
    for (const r of p.records)
      list.push({ key: r.key, value: r.value, ...(r.headers ? { headers: { ...r.headers } } : {}) });
    messages.set(p.topic, list);
  }
  return [...messages].map(([topic, list]) => ({ topic, messages: list }));
}
