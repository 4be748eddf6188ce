import { Agent, request } from 'node:http';
import type { ZodType } from 'zod';
import {
  BroadcastResult,
  DELIVER_BATCH_STREAM_TYPE,
  DeliverBatchResult,
  DeliverResult,
  type BroadcastRequest,
  type DeliverRequest,
  type TraceContext,
} from '@pushline/protocol';
import { closeOnce } from '@pushline/runtime';
import {
  injectTraceHeaders,
  stageCounter,
  type Counter,
  type Logger,
  type Registry,
} from '@pushline/telemetry';
import { batchAttempt, type BatchAttemptOptions } from './batch-exchange.ts';
import { BatchItems } from './batch-items.ts';
import { DeliveryTransportError, InternalAuthError } from './errors.ts';
import { classifyRequestError, trackConnected } from './request-errors.ts';
import type { BatchDeliveryTransport } from './types.ts';

export const DELIVER_PATH = '/internal/v1/deliver';
export const BROADCAST_PATH = '/internal/v1/broadcast';
export const DELIVER_BATCH_PATH = '/internal/v1/deliver-batch';

/** Answers are a few hundred bytes; anything far larger is not a connection server talking. */
const MAX_RESPONSE_BYTES = 64 * 1024;
/** A batch answers one small result per item, at most `DELIVER_BATCH_MAX` of them. */
const MAX_BATCH_RESPONSE_BYTES = 1024 * 1024;
/** The streamed answer first; an older server ignores `accept` and sends JSON. */
const BATCH_ACCEPT = `${DELIVER_BATCH_STREAM_TYPE}, application/json;q=0.5`;

export interface HttpDeliveryTransportOptions {
  /** Sent as `authorization: Bearer <token>`; must equal the servers' PUSHLINE_INTERNAL_TOKEN. */
  readonly internalToken: string;
  /** Concurrent sockets per connection server. Default 256. */
  readonly maxSockets?: number;
  /** Waited beyond a request's `timeoutMs` for the server to report the device's timeout itself. Default 1000. */
  readonly timeoutMarginMs?: number;
  readonly logger: Logger;
  /** When given, counts requests as `pushline_transport_requests_total{route,result}`. */
  readonly metrics?: Registry;
}

type Exchange =
  | { readonly kind: 'answer'; readonly status: number; readonly body: Buffer; readonly latencyMs: number }
  /** The request never reached the server: known not delivered. */
  | { readonly kind: 'unreachable'; readonly code: string; readonly latencyMs: number }
  /** The connection broke after the request may have reached the server: outcome unknown. */
  | { readonly kind: 'lost'; readonly code: string; readonly latencyMs: number }
  | { readonly kind: 'timeout'; readonly latencyMs: number };

type Attempt =
  | Exclude<Exchange, { kind: 'lost' }>
  | { readonly kind: 'dropped'; readonly code: string; readonly retriable: boolean }
  | { readonly kind: 'error'; readonly error: Error };

type Route = 'deliver' | 'deliver_batch' | 'broadcast';
type RequestResult = 'ok' | 'unreachable' | 'lost' | 'timeout' | 'auth' | 'error';

/**
 * Calls the connection servers' internal endpoints over HTTP/1.1 with keep-alive: one pool of
 * sockets per server, reused most-recently-first (`lifo`) so idle sockets age out under low load.
 */
export class HttpDeliveryTransport implements BatchDeliveryTransport {
  readonly #agent: Agent;
  readonly #authorization: string;
  readonly #marginMs: number;
  readonly #logger: Logger;
  readonly #requests: Counter<'route' | 'result'> | undefined;
  #closed = false;
  /** Aborted by close(), so no exchange outlives the transport. */
  readonly #abort = new AbortController();
  readonly close: () => Promise<void>;

  constructor(options: HttpDeliveryTransportOptions) {
    this.#agent = new Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 256, scheduling: 'lifo' });
    this.#authorization = `Bearer ${options.internalToken}`;
    this.#marginMs = options.timeoutMarginMs ?? 1000;
    this.#logger = options.logger;
    this.#requests = options.metrics
      ? stageCounter({
          name: 'pushline_transport_requests_total',
          help: 'Requests to connection servers by endpoint and result.',
          labels: {
            route: ['deliver', 'deliver_batch', 'broadcast'],
            result: ['ok', 'unreachable', 'lost', 'timeout', 'auth', 'error'],
          },
          registry: options.metrics,
        })
      : undefined;
    this.close = closeOnce(async () => {
      this.#closed = true;
      // In-flight exchanges end now (their calls reject with "transport is closed") instead of at
      // their deadlines, and are not retried; then the pooled sockets go.
      this.#abort.abort();
      this.#agent.destroy();
    });
  }

  async deliver(serverUrl: string, req: DeliverRequest): Promise<DeliverResult> {
    const trace = req.trace ?? activeTrace();
    const body = trace ? { ...req, trace } : req;
    const ex = await this.#exchange('deliver', serverUrl, DELIVER_PATH, body, trace, req.timeoutMs);
    // Only a request that never left is known not delivered; see TransportReason.
    if (ex.kind === 'unreachable') {
      return { outcome: 'not_connected', reason: 'server_unreachable', latencyMs: ex.latencyMs };
    }
    if (ex.kind === 'lost') return { outcome: 'timeout', reason: 'server_lost', latencyMs: ex.latencyMs };
    if (ex.kind === 'timeout')
      return { outcome: 'timeout', reason: 'server_timeout', latencyMs: ex.latencyMs };
    return this.#parse('deliver', serverUrl, ex, DeliverResult);
  }

  /**
   * Delivers many messages through one server in one exchange (`POST /internal/v1/deliver-batch`,
   * at most `DELIVER_BATCH_MAX`): one promise per request, in request order, each settled as soon
   * as that request has its outcome, with `deliver`'s outcomes and errors. The server streams one
   * line per item as its device acks (`DELIVER_BATCH_STREAM_TYPE`), so a slow device delays only
   * its own promise; each item also times out on its own (`timeoutMs` plus the margin). A server
   * from before the stream answers all items at once, and one without the batch endpoint (404)
   * gets the requests one by one. Every request is delivered on its own, all at once: put at most
   * one request per device in a call when their order matters. Each item carries its own trace
   * context (the caller's active one when it has none); the batch request itself carries none.
   */
  deliverEach(serverUrl: string, reqs: readonly DeliverRequest[]): Promise<DeliverResult>[] {
    if (reqs.length === 0) return [];
    if (reqs.length === 1) return [this.deliver(serverUrl, reqs[0] as DeliverRequest)];
    const items = new BatchItems(reqs.length);
    this.#deliverBatch(serverUrl, reqs, items).catch((err: unknown) => items.rejectRest(err));
    return items.promises;
  }

  async broadcast(serverUrl: string, req: BroadcastRequest): Promise<BroadcastResult> {
    const trace = req.trace ?? activeTrace();
    const body = trace ? { ...req, trace } : req;
    const ex = await this.#exchange('broadcast', serverUrl, BROADCAST_PATH, body, trace, req.timeoutMs);
    if (ex.kind === 'unreachable') {
      throw new DeliveryTransportError(`connection server ${serverUrl} unreachable (${ex.code})`, {
        failure: 'server_unreachable',
        serverUrl,
      });
    }
    if (ex.kind === 'lost') {
      throw new DeliveryTransportError(
        `connection server ${serverUrl} was lost during a broadcast (${ex.code}); subscribers may have it`,
        { failure: 'server_lost', serverUrl },
      );
    }
    if (ex.kind === 'timeout') {
      throw new DeliveryTransportError(`connection server ${serverUrl} gave no broadcast result in time`, {
        failure: 'server_timeout',
        serverUrl,
      });
    }
    return this.#parse('broadcast', serverUrl, ex, BroadcastResult);
  }

  async #deliverBatch(serverUrl: string, reqs: readonly DeliverRequest[], items: BatchItems): Promise<void> {
    this.#throwIfClosed(serverUrl);
    const fallback = activeTrace();
    const body = {
      items: reqs.map((req) => (req.trace || !fallback ? req : { ...req, trace: fallback })),
    };
    const payload = Buffer.from(JSON.stringify(body));
    const started = performance.now();
    const deadlines = reqs.map((req) => started + req.timeoutMs + this.#marginMs);
    const options: BatchAttemptOptions = {
      agent: this.#agent,
      signal: this.#abort.signal,
      url: `${serverUrl.replace(/\/+$/, '')}${DELIVER_BATCH_PATH}`,
      payload,
      headers: {
        authorization: this.#authorization,
        'content-type': 'application/json',
        'content-length': payload.length,
        accept: BATCH_ACCEPT,
      },
      deadlines,
      started,
      items,
      maxBodyBytes: MAX_BATCH_RESPONSE_BYTES,
      maxLineBytes: MAX_RESPONSE_BYTES,
    };
    const attempt = await this.#withRetry(serverUrl, Math.max(...deadlines), () => batchAttempt(options));
    const latencyMs = performance.now() - started;
    const route = 'deliver_batch';
    // The items still open may have reached their devices: they end as timeouts, never not_connected.
    const lost = (code: string) => {
      this.#count(route, 'lost');
      this.#logger.warn({ serverUrl, route, code, open: items.open }, 'connection server lost mid-exchange');
      items.resolveRest(() => ({ outcome: 'timeout', reason: 'server_lost', latencyMs }));
    };
    switch (attempt.kind) {
      case 'streamed': {
        if (items.open === 0) return this.#count(route, 'ok');
        this.#count(route, 'error');
        throw new DeliveryTransportError(
          `connection server ${serverUrl} ended a streamed batch without ${items.open} of ${items.size} results`,
          { failure: 'invalid_response', serverUrl, status: attempt.status },
        );
      }
      case 'broken':
        if (attempt.failure === 'network') return lost(attempt.message);
        this.#count(route, 'error');
        this.#logger.warn(
          { serverUrl, route, failure: attempt.failure, open: items.open, reason: attempt.message },
          'streamed batch broke off',
        );
        throw new DeliveryTransportError(`${route} to ${serverUrl} broke off: ${attempt.message}`, {
          failure: attempt.failure,
          serverUrl,
          status: attempt.status,
          cause: attempt.cause,
        });
      case 'expired':
        this.#count(route, 'timeout');
        this.#logger.warn({ serverUrl, route }, 'connection server did not answer in time');
        return;
      case 'unreachable':
        this.#count(route, 'unreachable');
        this.#logger.debug({ serverUrl, route, code: attempt.code }, 'connection server unreachable');
        items.resolveRest(() => ({ outcome: 'not_connected', reason: 'server_unreachable', latencyMs }));
        return;
      case 'dropped':
      case 'lost':
        return lost(attempt.code);
      case 'error':
        throw this.#failed(route, serverUrl, attempt.error);
      case 'answer':
        return this.#settleAnswer(serverUrl, reqs, items, { ...attempt, latencyMs });
    }
  }

  /** A server that did not stream: an older one's all-at-once JSON, or no batch endpoint at all. */
  #settleAnswer(
    serverUrl: string,
    reqs: readonly DeliverRequest[],
    items: BatchItems,
    ex: Exchange & { kind: 'answer' },
  ): void {
    if (ex.status === 404) {
      // A server from before the batch endpoint (rolling upgrade).
      reqs.forEach((req, i) => {
        if (!items.isOpen(i)) return;
        this.deliver(serverUrl, req).then(
          (result) => items.resolve(i, result),
          (err: unknown) => items.reject(i, err),
        );
      });
      return;
    }
    const { results } = this.#parse('deliver_batch', serverUrl, ex, DeliverBatchResult, (r) =>
      r.results.length === reqs.length
        ? undefined
        : `answered ${r.results.length} results to ${reqs.length} deliveries`,
    );
    results.forEach((result, i) => items.resolve(i, result));
  }

  /** `check` names what else is wrong with a body that matches the schema, if anything. */
  #parse<T>(
    route: Route,
    serverUrl: string,
    ex: Exchange & { kind: 'answer' },
    schema: ZodType<T>,
    check?: (value: T) => string | undefined,
  ): T {
    if (ex.status === 401) {
      this.#count(route, 'auth');
      this.#logger.error({ serverUrl, route }, 'connection server rejected the internal token');
      throw new InternalAuthError(serverUrl);
    }
    if (ex.status < 200 || ex.status >= 300) {
      this.#count(route, 'error');
      throw new DeliveryTransportError(
        `connection server ${serverUrl} answered ${ex.status} to ${route}: ${ex.body.toString('utf8', 0, 512)}`,
        { failure: 'http_status', serverUrl, status: ex.status },
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(ex.body.toString('utf8'));
    } catch (cause) {
      this.#count(route, 'error');
      throw new DeliveryTransportError(`connection server ${serverUrl} sent a non-JSON ${route} result`, {
        failure: 'invalid_response',
        serverUrl,
        status: ex.status,
        cause,
      });
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      this.#count(route, 'error');
      throw new DeliveryTransportError(`connection server ${serverUrl} sent an invalid ${route} result`, {
        failure: 'invalid_response',
        serverUrl,
        status: ex.status,
        cause: parsed.error,
      });
    }
    const problem = check?.(parsed.data);
    if (problem) {
      this.#count(route, 'error');
      throw new DeliveryTransportError(`connection server ${serverUrl} ${problem}`, {
        failure: 'invalid_response',
        serverUrl,
        status: ex.status,
      });
    }
    this.#count(route, 'ok');
    return parsed.data;
  }

  #throwIfClosed(serverUrl: string): void {
    if (this.#closed) {
      throw new DeliveryTransportError('delivery transport is closed', { failure: 'network', serverUrl });
    }
  }

  async #exchange(
    route: Route,
    serverUrl: string,
    path: string,
    body: unknown,
    trace: TraceContext | undefined,
    timeoutMs: number,
    maxResponseBytes = MAX_RESPONSE_BYTES,
  ): Promise<Exchange> {
    this.#throwIfClosed(serverUrl);
    const url = `${serverUrl.replace(/\/+$/, '')}${path}`;
    const payload = Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = {
      authorization: this.#authorization,
      'content-type': 'application/json',
      'content-length': payload.length,
    };
    if (trace?.traceparent) headers['traceparent'] = trace.traceparent;
    if (trace?.tracestate) headers['tracestate'] = trace.tracestate;

    const started = performance.now();
    const deadline = started + timeoutMs + this.#marginMs;
    const attempt = await this.#withRetry(serverUrl, deadline, () =>
      this.#attempt(url, payload, headers, deadline - performance.now(), maxResponseBytes),
    );
    const latencyMs = performance.now() - started;
    switch (attempt.kind) {
      case 'answer':
        return attempt;
      case 'timeout':
        this.#count(route, 'timeout');
        this.#logger.warn({ serverUrl, route, timeoutMs }, 'connection server did not answer in time');
        return { kind: 'timeout', latencyMs };
      case 'unreachable':
        this.#count(route, 'unreachable');
        this.#logger.debug({ serverUrl, route, code: attempt.code }, 'connection server unreachable');
        return { kind: 'unreachable', code: attempt.code, latencyMs };
      case 'dropped':
      case 'lost':
        this.#count(route, 'lost');
        this.#logger.warn({ serverUrl, route, code: attempt.code }, 'connection server lost mid-request');
        return { kind: 'lost', code: attempt.code, latencyMs };
      case 'error':
        throw this.#failed(route, serverUrl, attempt.error);
    }
  }

  /**
   * One attempt, and one more on a fresh socket when a pooled one was found closed: a socket the
   * server closed while idle fails on first write, and Node's documented remedy is to retry once.
   * Servers dedupe by message id per connection, so it is safe. The first attempt may also have
   * reached a server that died after acting on it, so a retry that cannot connect does not make
   * the outcome known: it is reported `lost`, never `unreachable`. Nothing is tried, or tried
   * again, once the transport is closed.
   */
  async #withRetry<A extends { readonly kind: string; readonly retriable?: boolean }>(
    serverUrl: string,
    deadline: number,
    attempt: () => Promise<A>,
  ): Promise<A | { readonly kind: 'lost'; readonly code: string }> {
    const first = await attempt();
    this.#throwIfClosed(serverUrl);
    if (first.kind !== 'dropped' || first.retriable !== true || performance.now() >= deadline) return first;
    const second = await attempt();
    this.#throwIfClosed(serverUrl);
    if (second.kind === 'unreachable') return { kind: 'lost', code: 'ECONNREFUSED_AFTER_DROP' };
    return second;
  }

  #failed(route: Route, serverUrl: string, error: Error): DeliveryTransportError {
    this.#count(route, 'error');
    return new DeliveryTransportError(`${route} to ${serverUrl} failed: ${error.message}`, {
      failure: 'network',
      serverUrl,
      cause: error,
    });
  }

  #attempt(
    url: string,
    payload: Buffer,
    headers: Record<string, string | number>,
    timeoutMs: number,
    maxResponseBytes: number,
  ) {
    return new Promise<Attempt>((resolve) => {
      const started = performance.now();
      let settled = false;
      let responded = false;
      const finish = (result: Attempt) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(result);
      };
      const req = request(url, { method: 'POST', agent: this.#agent, headers, signal: this.#abort.signal });
      const connected = trackConnected(req);
      const timer = setTimeout(
        () => {
          finish({ kind: 'timeout', latencyMs: performance.now() - started });
          req.destroy();
        },
        Math.max(0, timeoutMs),
      );
      req.on('response', (res) => {
        responded = true;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxResponseBytes) {
            finish({ kind: 'error', error: new Error(`response larger than ${maxResponseBytes} bytes`) });
            req.destroy();
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () =>
          finish({
            kind: 'answer',
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks),
            latencyMs: performance.now() - started,
          }),
        );
        // Cut off mid-answer: the server was acting on the request.
        const cut = () => finish({ kind: 'dropped', code: 'ECONNRESET', retriable: false });
        res.on('error', cut);
        res.on('close', () => {
          if (!res.complete) cut();
        });
      });
      req.on('error', (error: NodeJS.ErrnoException) => {
        const failure = classifyRequestError(error, {
          connected: connected(),
          responded,
          reusedSocket: req.reusedSocket,
        });
        finish(
          failure.kind === 'unreachable' ? { ...failure, latencyMs: performance.now() - started } : failure,
        );
      });
      req.end(payload);
    });
  }

  #count(route: Route, result: RequestResult): void {
    this.#requests?.inc({ route, result });
  }
}

function activeTrace(): TraceContext | undefined {
  const headers = injectTraceHeaders();
  return headers.traceparent ? headers : undefined;
}
