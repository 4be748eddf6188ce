import { request, type Agent, type IncomingMessage } from 'node:http';
import { DELIVER_BATCH_STREAM_TYPE, DeliverBatchLine } from '@pushline/protocol';
import type { BatchItems } from './batch-items.ts';
import { LineSplitter } from './ndjson.ts';
import { classifyRequestError, trackConnected, type RequestFailure } from './request-errors.ts';

/** How one deliver-batch request ended. Items may have settled along the way (lines, deadlines). */
export type BatchAttempt =
  /** A buffered (non-streamed) answer: an older server's JSON, or a non-2xx status. */
  | { readonly kind: 'answer'; readonly status: number; readonly body: Buffer }
  /** The streamed answer ended normally; items it gave no line for are still open. */
  | { readonly kind: 'streamed'; readonly status: number }
  /** The streamed answer broke off (network) or was not the agreed format (invalid_response). */
  | {
      readonly kind: 'broken';
      readonly failure: 'network' | 'invalid_response';
      readonly message: string;
      readonly status: number;
      readonly cause?: unknown;
    }
  /** Every open item passed its deadline (and was settled as a server timeout). */
  | { readonly kind: 'expired'; readonly responded: boolean }
  | RequestFailure;

export interface BatchAttemptOptions {
  readonly agent: Agent;
  /** Aborts the exchange (the transport closing). */
  readonly signal?: AbortSignal;
  readonly url: string;
  readonly payload: Buffer;
  readonly headers: Readonly<Record<string, string | number>>;
  /** Per item: when to stop waiting for its line (`performance.now()` time). */
  readonly deadlines: readonly number[];
  /** Latencies of server timeouts count from here (the first attempt's start). */
  readonly started: number;
  readonly items: BatchItems;
  /** Largest buffered (non-streamed) answer. */
  readonly maxBodyBytes: number;
  /** Largest line of a streamed answer. */
  readonly maxLineBytes: number;
}

/**
 * POSTs one deliver-batch request and settles each item as soon as its outcome is known: its line
 * in a streamed answer, or its own deadline (`timeout` / `server_timeout`). Everything else (an
 * older server's buffered answer, failures) is reported to the caller, which settles the rest.
 */
export function batchAttempt(o: BatchAttemptOptions): Promise<BatchAttempt> {
  return new Promise<BatchAttempt>((resolve) => {
    let done = false;
    let responded = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (result: BatchAttempt) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(result);
    };
    const req = request(o.url, {
      method: 'POST',
      agent: o.agent,
      headers: o.headers,
      ...(o.signal ? { signal: o.signal } : {}),
    });
    const connected = trackConnected(req);
    const abort = (result: BatchAttempt) => {
      finish(result);
      req.destroy();
    };

    // One timer, always at the earliest deadline of an item still open.
    let expiredAny = false;
    const expire = () => {
      const now = performance.now();
      let next = Infinity;
      o.deadlines.forEach((deadline, i) => {
        if (!o.items.isOpen(i)) return;
        if (deadline > now) next = Math.min(next, deadline);
        else {
          expiredAny = true;
          o.items.resolve(i, { outcome: 'timeout', reason: 'server_timeout', latencyMs: now - o.started });
        }
      });
      // Every item answered but the response never ended: stop holding the socket.
      if (o.items.open === 0)
        abort(expiredAny ? { kind: 'expired', responded } : { kind: 'streamed', status: 200 });
      else timer = setTimeout(expire, next - now);
    };
    expire();

    req.on('response', (res) => {
      responded = true;
      const status = res.statusCode ?? 0;
      if (status === 200 && isStream(res.headers['content-type'])) readStream(res, o, finish, abort);
      else readBody(res, o.maxBodyBytes, status, finish, abort);
    });
    req.on('error', (error: NodeJS.ErrnoException) => {
      finish(
        classifyRequestError(error, { connected: connected(), responded, reusedSocket: req.reusedSocket }),
      );
    });
    req.end(o.payload);
  });
}

function isStream(contentType: string | undefined): boolean {
  return contentType?.split(';')[0]?.trim().toLowerCase() === DELIVER_BATCH_STREAM_TYPE;
}

function readBody(
  res: IncomingMessage,
  maxBytes: number,
  status: number,
  finish: (a: BatchAttempt) => void,
  abort: (a: BatchAttempt) => void,
): void {
  const chunks: Buffer[] = [];
  let size = 0;
  res.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > maxBytes) {
      abort({ kind: 'error', error: new Error(`response larger than ${maxBytes} bytes`) });
      return;
    }
    chunks.push(chunk);
  });
  res.on('end', () => finish({ kind: 'answer', status, body: Buffer.concat(chunks) }));
  // Cut off mid-answer: the server was acting on the items, so their outcome is unknown.
  res.on('error', (cause) =>
    finish({ kind: 'broken', failure: 'network', message: cause.message, status, cause }),
  );
  res.on('close', () => {
    if (!res.complete) {
      finish({ kind: 'broken', failure: 'network', message: 'connection closed mid-answer', status });
    }
  });
}

function readStream(
  res: IncomingMessage,
  o: BatchAttemptOptions,
  finish: (a: BatchAttempt) => void,
  abort: (a: BatchAttempt) => void,
): void {
  const splitter = new LineSplitter(o.maxLineBytes);
  const answered = new Uint8Array(o.items.size);
  const invalid = (message: string, cause?: unknown) =>
    abort({ kind: 'broken', failure: 'invalid_response', message, status: 200, cause });

  /** Settles the line's item; false (after aborting) when the line breaks the contract. */
  const take = (raw: string): boolean => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.length === 0) return true;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch (cause) {
      invalid(`a streamed batch line is not JSON: ${line.slice(0, 120)}`, cause);
      return false;
    }
    const parsed = DeliverBatchLine.safeParse(json);
    if (!parsed.success) {
      invalid(`a streamed batch line is outside the contract: ${line.slice(0, 120)}`, parsed.error);
      return false;
    }
    const { index, result } = parsed.data;
    if (index >= o.items.size || answered[index]) {
      invalid(`a streamed batch line for item ${index} of ${o.items.size} came unasked or twice`);
      return false;
    }
    answered[index] = 1;
    // An item already past its own deadline keeps its server_timeout.
    o.items.resolve(index, result);
    return true;
  };

  res.on('data', (chunk: Buffer) => {
    let lines: string[];
    try {
      lines = splitter.push(chunk);
    } catch (cause) {
      invalid('a streamed batch line is too long', cause);
      return;
    }
    for (const line of lines) if (!take(line)) return;
  });
  res.on('end', () => {
    const rest = splitter.end();
    if (rest !== undefined && !take(rest)) return;
    finish({ kind: 'streamed', status: 200 });
  });
  // A connection cut mid-stream: Node reports it as an error and/or a close before `end`.
  res.on('error', (cause) =>
    finish({ kind: 'broken', failure: 'network', message: cause.message, status: 200, cause }),
  );
  res.on('close', () => {
    if (!res.complete) {
      finish({ kind: 'broken', failure: 'network', message: 'connection closed mid-stream', status: 200 });
    }
  });
}
