import { setTimeout as sleep } from 'node:timers/promises';
import type { Producer } from '@pushline/kafka';
import { pushTargetKey, type PushRequest } from '@pushline/protocol';
import { CHAOS_TOPIC } from './devices.ts';

/**
 * How a request entered the platform:
 * - `publish-device` / `publish-user` / `publish-topic`: `POST /v1/publish` (async, Kafka);
 * - `kafka-device`: a PushRequest produced straight into `<prefix>push-requests`;
 * - `direct`: `POST /v1/devices/{id}/messages`, answered synchronously (no delivery events).
 */
export type RequestKind = 'publish-device' | 'publish-user' | 'publish-topic' | 'kafka-device' | 'direct';

/**
 * - accepted: 202 from /v1/publish, Kafka acknowledged the produce, or a direct push answered
 *   with a delivery outcome (200/202/404/422/504);
 * - refused: a problem answer (4xx/5xx) or a produce that failed;
 * - unknown: no answer (the request timed out or the connection broke).
 */
export type RequestStatus = 'accepted' | 'refused' | 'unknown';

export interface SentRequest {
  readonly id: string;
  readonly kind: RequestKind;
  /** Device, user or topic id. */
  readonly targetId: string;
  readonly ttlSeconds: number | undefined;
  readonly sentAt: number;
  answeredAt: number | undefined;
  status: RequestStatus | 'pending';
  httpStatus: number | undefined;
  /** Direct pushes: the answer's outcome and reason. */
  outcome: string | undefined;
  reason: string | undefined;
  error: string | undefined;
}

export interface TrafficOptions {
  readonly apiUrl: string;
  readonly apiKey: string;
  readonly producer: Producer;
  readonly pushRequestsTopic: string;
  readonly deviceIds: readonly string[];
  readonly userIds: readonly string[];
  /** Messages per second over all kinds. */
  readonly ratePerS: number;
  /** TTL of the half of async messages that get one. */
  readonly ttlSeconds: number;
  /** Ack timeout of direct pushes. */
  readonly directTimeoutMs: number;
  /** Longest the suite waits for any answer before it counts the request as unknown. */
  readonly answerTimeoutMs: number;
}

/** Share of the rate per kind; topic broadcasts go at a fixed pace instead. */
const MIX = { 'publish-device': 0.5, 'kafka-device': 0.15, direct: 0.25, 'publish-user': 0.1 } as const;
const TOPIC_EVERY_MS = 2000;
const TICK_MS = 100;
/** Bounds on what the generator keeps in flight; past them a tick offers nothing more. */
const MAX_HTTP_IN_FLIGHT = 64;
const MAX_PRODUCES_IN_FLIGHT = 4;

/**
 * Offers the traffic mix at a steady rate until stopped, and records every request with its
 * answer. Nothing is retried: a refused or unanswered request stays so in the ledger.
 */
export class Traffic {
  readonly sent: SentRequest[] = [];
  /** Requests the generator did not offer because too many were in flight. */
  notOffered = 0;
  readonly #options: TrafficOptions;
  readonly #label: string;
  readonly #inFlight = new Set<Promise<void>>();
  #httpInFlight = 0;
  #producesInFlight = 0;
  #seq = 0;
  #running: Promise<void> | undefined;
  #stopping = false;

  constructor(label: string, options: TrafficOptions) {
    this.#label = label;
    this.#options = options;
  }

  start(): void {
    this.#running ??= this.#loop();
  }

  /** Stops offering and waits for every answer (each bounded by answerTimeoutMs). */
  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#running;
    await Promise.all([...this.#inFlight]);
  }

  async #loop(): Promise<void> {
    const owed: Record<string, number> = {};
    let lastTopic = 0;
    while (!this.#stopping) {
      for (const [kind, share] of Object.entries(MIX)) {
        owed[kind] = (owed[kind] ?? 0) + (this.#options.ratePerS * share * TICK_MS) / 1000;
        const n = Math.floor(owed[kind] ?? 0);
        if (n < 1) continue;
        owed[kind] = (owed[kind] ?? 0) - n;
        this.#offer(kind as keyof typeof MIX, n);
      }
      if (Date.now() - lastTopic >= TOPIC_EVERY_MS) {
        lastTopic = Date.now();
        this.#offer('publish-topic', 1);
      }
      // The generator's pace: one tick of the mix every TICK_MS.
      await sleep(TICK_MS);
    }
  }

  #offer(kind: RequestKind, n: number): void {
    if (kind === 'kafka-device') {
      if (this.#producesInFlight >= MAX_PRODUCES_IN_FLIGHT) {
        this.notOffered += n;
        return;
      }
      this.#track(this.#produce(n));
      return;
    }
    if (kind === 'direct') {
      for (let i = 0; i < n; i++) {
        if (this.#httpInFlight >= MAX_HTTP_IN_FLIGHT) {
          this.notOffered += n - i;
          return;
        }
        this.#track(this.#direct());
      }
      return;
    }
    if (this.#httpInFlight >= MAX_HTTP_IN_FLIGHT) {
      this.notOffered += n;
      return;
    }
    this.#track(this.#publish(kind, n));
  }

  #track(p: Promise<void>): void {
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p));
  }

  #record(kind: RequestKind, targetId: string, ttlSeconds: number | undefined): SentRequest {
    const entry: SentRequest = {
      id: `${this.#label}-${kind.replace('-', '')}-${this.#seq++}`,
      kind,
      targetId,
      ttlSeconds,
      sentAt: Date.now(),
      answeredAt: undefined,
      status: 'pending',
      httpStatus: undefined,
      outcome: undefined,
      reason: undefined,
      error: undefined,
    };
    this.sent.push(entry);
    return entry;
  }

  /** Half of the async messages carry a ttl (stored for an offline device), half none. */
  #ttl(): number | undefined {
    return this.#seq % 2 === 0 ? this.#options.ttlSeconds : undefined;
  }

  #pick<T>(list: readonly T[]): T {
    return list[Math.floor(Math.random() * list.length)] as T;
  }

  async #publish(kind: RequestKind, n: number): Promise<void> {
    const entries: SentRequest[] = [];
    for (let i = 0; i < n; i++) {
      const targetId =
        kind === 'publish-topic'
          ? CHAOS_TOPIC
          : kind === 'publish-user'
            ? this.#pick(this.#options.userIds)
            : this.#pick(this.#options.deviceIds);
      entries.push(this.#record(kind, targetId, kind === 'publish-topic' ? undefined : this.#ttl()));
    }
    const type = kind === 'publish-topic' ? 'topic' : kind === 'publish-user' ? 'user' : 'device';
    const body = {
      messages: entries.map((e) => ({
        id: e.id,
        target: { type, id: e.targetId },
        payload: { chaos: e.id },
        ...(e.ttlSeconds === undefined ? {} : { ttlSeconds: e.ttlSeconds }),
      })),
    };
    await this.#http('/v1/publish', body, entries, (status) => (status === 202 ? 'accepted' : 'refused'));
  }

  async #direct(): Promise<void> {
    const entry = this.#record('direct', this.#pick(this.#options.deviceIds), undefined);
    await this.#http(
      `/v1/devices/${encodeURIComponent(entry.targetId)}/messages`,
      { id: entry.id, payload: { chaos: entry.id }, timeoutMs: this.#options.directTimeoutMs },
      [entry],
      (status, contentType) =>
        // A delivery outcome is a JSON result; a problem (503, 500, ...) is a refusal.
        contentType.startsWith('application/json') && [200, 202, 404, 422, 504].includes(status)
          ? 'accepted'
          : 'refused',
    );
  }

  async #http(
    path: string,
    body: unknown,
    entries: SentRequest[],
    classify: (status: number, contentType: string) => RequestStatus,
  ): Promise<void> {
    this.#httpInFlight++;
    try {
      const res = await fetch(`${this.#options.apiUrl}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.#options.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.#options.answerTimeoutMs),
      });
      const text = await res.text();
      const status = classify(res.status, res.headers.get('content-type') ?? '');
      let answer: { outcome?: unknown; reason?: unknown } = {};
      try {
        answer = JSON.parse(text) as typeof answer;
      } catch {
        // not JSON: kept as the error text below
      }
      for (const e of entries) {
        e.answeredAt = Date.now();
        e.httpStatus = res.status;
        e.status = status;
        if (typeof answer.outcome === 'string') e.outcome = answer.outcome;
        if (typeof answer.reason === 'string') e.reason = answer.reason;
        if (status === 'refused') e.error = text.slice(0, 200);
      }
    } catch (err) {
      for (const e of entries) {
        e.answeredAt = Date.now();
        e.status = 'unknown';
        e.error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      }
    } finally {
      this.#httpInFlight--;
    }
  }

  async #produce(n: number): Promise<void> {
    const entries = Array.from({ length: n }, () =>
      this.#record('kafka-device', this.#pick(this.#options.deviceIds), this.#ttl()),
    );
    const records = entries.map((e) => {
      const request: PushRequest = {
        v: 1,
        id: e.id,
        target: { type: 'device', id: e.targetId },
        payload: { chaos: e.id },
        ...(e.ttlSeconds === undefined ? {} : { ttlSeconds: e.ttlSeconds }),
        createdAt: e.sentAt,
      };
      return { key: pushTargetKey(request.target), value: JSON.stringify(request) };
    });
    this.#producesInFlight++;
    let timer: NodeJS.Timeout | undefined;
    try {
      // kafkajs cannot cancel a send; past the bound the outcome is unknown (it may still land).
      const outcome = await Promise.race([
        this.#options.producer.send(this.#options.pushRequestsTopic, records).then(() => 'accepted' as const),
        new Promise<'unknown'>((resolve) => {
          timer = setTimeout(() => resolve('unknown'), this.#options.answerTimeoutMs);
        }),
      ]);
      for (const e of entries) {
        e.status = outcome;
        e.answeredAt = Date.now();
      }
    } catch (err) {
      for (const e of entries) {
        e.status = 'refused';
        e.answeredAt = Date.now();
        e.error = err instanceof Error ? err.message : String(err);
      }
    } finally {
      clearTimeout(timer);
      this.#producesInFlight--;
    }
  }
}
