import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  BroadcastRequest,
  DELIVER_BATCH_STREAM_TYPE,
  DeliverBatchRequestFromJson,
  DeliverRequestFromJson,
  Identifier,
  jsonTextTooDeep,
  type DeliverRequest,
  type BroadcastResult,
  type DeliverBatchLine,
  type DeliverResult,
} from '@pushline/protocol';
import { BodyTooLargeError, readBody, sendJson, type ExtraRoute } from '@pushline/runtime';
import { SpanKind, type Logger } from '@pushline/telemetry';
import { z } from 'zod';
import type { ConnectionServerMetrics } from './metrics.ts';

export const INTERNAL_ROUTES = {
  deliver: '/internal/v1/deliver',
  deliverBatch: '/internal/v1/deliver-batch',
  broadcast: '/internal/v1/broadcast',
  replaced: '/internal/v1/replaced',
} as const;

/**
 * Body of `POST /internal/v1/replaced`: the device reconnected to another server, so the connection
 * `connectionId` here (if still open) is closed with reason `replaced` (Zuul issue #1825: otherwise
 * the old connection lingers until its TCP connection dies).
 */
export const ReplacedNotice = z.object({ deviceId: Identifier, connectionId: z.string().min(1).max(64) });
export type ReplacedNotice = z.infer<typeof ReplacedNotice>;

export interface InternalApiOptions {
  readonly internalToken: string;
  readonly deliver: (req: DeliverRequest, kind: SpanKind) => Promise<DeliverResult>;
  readonly broadcast: (req: BroadcastRequest, kind: SpanKind) => Promise<BroadcastResult>;
  /** Closes the local connection if it is still `connectionId`; returns whether it did. */
  readonly replaced: (notice: ReplacedNotice) => boolean;
  readonly metrics: ConnectionServerMetrics;
  readonly logger: Logger;
  /** Largest request body. Default 1 MiB. */
  readonly bodyLimitBytes?: number;
  /** Largest deliver-batch body. Default 16 MiB (500 items of the largest payloads fit). */
  readonly batchBodyLimitBytes?: number;
  /**
   * PUSHLINE_MAX_JSON_DEPTH: the deepest a payload may nest. Checked on the body text before it is
   * parsed: socket.io walks a payload recursively when it emits it to the device.
   */
  readonly maxJsonDepth: number;
}

/** Levels of a body above its payload: a batch's `{ items: [ { payload } ] }`. */
const ENVELOPE_DEPTH = 3;

/**
 * The internal delivery API, mounted on the OpsServer of the internal port:
 * `POST /internal/v1/deliver` (DeliverRequest → DeliverResult) and
 * `POST /internal/v1/broadcast` (BroadcastRequest → BroadcastResult), both behind
 * `authorization: Bearer <PUSHLINE_INTERNAL_TOKEN>`. Device outcomes are always 200 with the
 * outcome in the body; 4xx is only for requests that are not valid deliver requests.
 * `POST /internal/v1/deliver-batch` (DeliverBatchRequest) delivers up to `DELIVER_BATCH_MAX`
 * messages at once, each with its own ack and timeout: one HTTP exchange instead of one per
 * message. A caller that accepts `DELIVER_BATCH_STREAM_TYPE` gets one `DeliverBatchLine` per item
 * as soon as that item has its outcome; any other caller (one from before the stream) gets
 * `DeliverBatchResult` when the last item has its outcome.
 */
export function internalApiRoutes(options: InternalApiOptions): ExtraRoute {
  const expected = digest(`Bearer ${options.internalToken}`);
  const limit = options.bodyLimitBytes ?? 1024 * 1024;
  const batchLimit = options.batchBodyLimitBytes ?? 16 * 1024 * 1024;
  const maxDepth = options.maxJsonDepth + ENVELOPE_DEPTH;

  // A batch item never fails the whole batch: a delivery that throws is not delivered.
  const deliverItem = (item: DeliverRequest): Promise<DeliverResult> =>
    options.deliver(item, SpanKind.SERVER).catch((err: unknown) => {
      options.logger.error({ err, messageId: item.messageId }, 'batch item delivery failed');
      return { outcome: 'not_connected', latencyMs: 0, reason: 'internal_error' };
    });

  return async (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const route = (Object.keys(INTERNAL_ROUTES) as (keyof typeof INTERNAL_ROUTES)[]).find(
      (r) => INTERNAL_ROUTES[r] === path,
    );
    if (!route) return false;
    const respond = (status: number, body: unknown, problem = false) => {
      options.metrics.internalRequests.inc({ route, status: String(status) });
      if (problem) sendProblem(res, status, body as Problem);
      else sendJson(res, status, body);
    };
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      respond(405, { title: 'method not allowed', status: 405 }, true);
      return true;
    }
    if (!timingSafeEqual(digest(req.headers.authorization ?? ''), expected)) {
      respond(401, { title: 'missing or wrong internal token', status: 401 }, true);
      return true;
    }
    if (route === 'replaced') {
      const notice = await parseJson(req, ReplacedNotice, limit, maxDepth);
      if (!notice.ok) respond(notice.problem.status, notice.problem, true);
      else respond(200, { closed: options.replaced(notice.value) });
      return true;
    }
    if (route === 'deliverBatch') {
      const batch = await parseJson(req, DeliverBatchRequestFromJson, batchLimit, maxDepth);
      if (!batch.ok) respond(batch.problem.status, batch.problem, true);
      else if (acceptsStream(req.headers.accept)) {
        options.metrics.internalRequests.inc({ route, status: '200' });
        await streamResults(res, batch.value.items, deliverItem);
      } else {
        const results = await Promise.all(batch.value.items.map(deliverItem));
        respond(200, { results });
      }
      return true;
    }
    const parsed =
      route === 'deliver'
        ? await parseJson(req, DeliverRequestFromJson, limit, maxDepth)
        : await parseJson(req, BroadcastRequest, limit, maxDepth);
    if (!parsed.ok) {
      respond(parsed.problem.status, parsed.problem, true);
      return true;
    }
    const result =
      route === 'deliver'
        ? await options.deliver(parsed.value as DeliverRequest, SpanKind.SERVER)
        : await options.broadcast(parsed.value as BroadcastRequest, SpanKind.SERVER);
    respond(200, result);
    return true;
  };
}

/** Whether the caller lists the streamed batch answer in `accept` (with a non-zero q). */
function acceptsStream(accept: string | undefined): boolean {
  if (!accept) return false;
  return accept.split(',').some((range) => {
    const [type, ...params] = range.split(';').map((p) => p.trim().toLowerCase());
    if (type !== DELIVER_BATCH_STREAM_TYPE) return false;
    const q = params.find((p) => p.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  });
}

/**
 * Answers a batch as newline-delimited `DeliverBatchLine`s, each written as soon as its item has an
 * outcome, so a caller settles fast devices without waiting for the slowest. Lines finished in the
 * same event-loop turn (acks read from many sockets together) go out in one write; the last line
 * ends the response. Resolves when the response has ended.
 */
function streamResults(
  res: ServerResponse,
  items: readonly DeliverRequest[],
  deliver: (item: DeliverRequest) => Promise<DeliverResult>,
): Promise<void> {
  // Headers go out with the first line, so a server that dies before any outcome looks like one
  // that dropped the request (which the caller may retry) rather than a broken stream.
  res.writeHead(200, { 'content-type': DELIVER_BATCH_STREAM_TYPE });
  let buffered = '';
  let flushing = false;
  let open = items.length;
  const flush = () => {
    flushing = false;
    if (buffered.length === 0 || res.writableEnded || res.destroyed) return;
    res.write(buffered);
    buffered = '';
  };
  return new Promise<void>((resolve) => {
    items.forEach((item, index) => {
      void deliver(item)
        // Every item gets its line even if delivery broke on our side, so the stream always ends.
        .catch((): DeliverResult => ({ outcome: 'not_connected', latencyMs: 0, reason: 'internal_error' }))
        .then((result) => {
          try {
            const line: DeliverBatchLine = { index, result };
            buffered += `${JSON.stringify(line)}\n`;
          } finally {
            if (--open === 0) {
              if (!res.destroyed) res.end(buffered);
              buffered = '';
              resolve();
            } else if (!flushing) {
              flushing = true;
              setImmediate(flush);
            }
          }
        });
    });
  });
}

interface Problem {
  readonly type?: string;
  readonly title: string;
  readonly status: number;
  readonly detail?: string;
  readonly errors?: readonly { path: string; message: string }[];
}

async function parseJson<T>(
  req: IncomingMessage,
  schema: z.ZodType<T>,
  limit: number,
  maxDepth: number,
): Promise<{ ok: true; value: T } | { ok: false; problem: Problem }> {
  let raw: Buffer;
  try {
    raw = await readBody(req, limit);
  } catch (err) {
    if (err instanceof BodyTooLargeError) {
      return { ok: false, problem: { title: 'request body too large', status: 413, detail: err.message } };
    }
    throw err;
  }
  if (jsonTextTooDeep(raw, maxDepth)) {
    return {
      ok: false,
      problem: { title: 'body nests too deep', status: 400, detail: `at most ${maxDepth} levels` },
    };
  }
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    return { ok: false, problem: { title: 'body is not JSON', status: 400 } };
  }
  const result = schema.safeParse(json);
  if (!result.success) {
    return {
      ok: false,
      problem: {
        title: 'invalid request body',
        status: 400,
        errors: result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
      },
    };
  }
  return { ok: true, value: result.data };
}

function sendProblem(res: ServerResponse, status: number, problem: Problem): void {
  const text = JSON.stringify({ type: 'about:blank', ...problem });
  res.writeHead(status, {
    'content-type': 'application/problem+json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

// Hashing first gives both sides the same length, which timingSafeEqual requires.
function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}
