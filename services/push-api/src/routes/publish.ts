import { randomUUID } from 'node:crypto';
import { SendWithdrawnError } from '@pushline/kafka';
import { PushRequest, pushTargetKey } from '@pushline/protocol';
import { SpanKind, injectTraceHeaders, withSpan } from '@pushline/telemetry';
import { principalOf } from '../auth.ts';
import type { ApiContext } from '../context.ts';
import { idempotentMessageId, type IdempotencyClaim } from '../idempotency.ts';
import { checkPayload } from '../payload.ts';
import { ProblemError } from '../problem.ts';
import type { ApiResult, RouteTable } from '../routing.ts';

export const IDEMPOTENCY_HEADER = 'idempotency-key';
export const REPLAYED_HEADER = 'idempotency-replayed';

export function registerPublishRoutes(table: RouteTable, ctx: ApiContext): void {
  const { schemas, config, topics } = ctx;
  table.add(
    {
      method: 'post',
      path: '/v1/publish',
      operationId: 'publish',
      summary: 'Queue messages for asynchronous delivery',
      description: `Takes one message or a batch of up to ${config.PUSHLINE_MAX_BATCH}, writes them to the push-requests topic and answers 202 once Kafka acknowledged them on every in-sync replica. Delivery happens later in the message processor, which records one outcome per device on the delivery-events topic. Without an acknowledgement within ${config.PUSHLINE_API_PUBLISH_TIMEOUT_MS} ms the answer is 503 with Retry-After, and the messages may or may not be queued: send an Idempotency-Key, and retry with it, to make sure without duplicates.`,
      tag: 'publish',
      scope: 'publish',
      params: schemas.NoParams,
      body: schemas.PublishBody,
      headers: [{ name: 'Idempotency-Key', schema: schemas.IdempotencyKey.optional() }],
      responses: {
        202: {
          description: 'Accepted: the messages are durably queued.',
          schema: schemas.PublishResult,
          headers: {
            'Idempotency-Replayed':
              '`true` when this is the stored answer to an earlier request with the same Idempotency-Key.',
          },
        },
      },
      problems: [
        'payload-too-large',
        'json-too-deep',
        'idempotency-conflict',
        'idempotency-key-reused',
        'service-unavailable',
      ],
    },
    async ({ body, req, res }) => {
      const batch = 'messages' in body;
      const messages = batch ? body.messages : [body];
      messages.forEach((m, i) =>
        checkPayload(m.payload, batch ? `messages[${i}].payload` : 'payload', {
          maxBytes: config.PUSHLINE_MAX_PAYLOAD_BYTES,
          maxDepth: config.PUSHLINE_MAX_JSON_DEPTH,
        }),
      );

      const origin = principalOf(res).id;
      const idempotencyKey = req.get(IDEMPOTENCY_HEADER);
      let claim: IdempotencyClaim | undefined;
      if (idempotencyKey) {
        claim = await unavailableOnError(ctx, 'idempotency store', () =>
          ctx.idempotency.claim(origin, idempotencyKey, body),
        );
        if (claim.kind === 'replay') {
          ctx.metrics.idempotentReplays.inc();
          return { ...claim.response, headers: { [REPLAYED_HEADER]: 'true' } };
        }
      }
      const owned = claim?.kind === 'claimed' ? claim : undefined;

      const createdAt = Date.now();
      let requests: PushRequest[];
      try {
        requests = messages.map((m, i) =>
          PushRequest.parse({
            v: 1,
            // A retry of the same request produces the same ids, so it cannot add messages.
            id: m.id ?? (idempotencyKey ? idempotentMessageId(origin, idempotencyKey, i) : randomUUID()),
            origin,
            target: m.target,
            payload: m.payload,
            ...(m.ttlSeconds !== undefined ? { ttlSeconds: m.ttlSeconds } : {}),
            createdAt,
          }),
        );
      } catch (err) {
        // Nothing was produced: the key is free again.
        if (owned) await releaseQuietly(ctx, owned);
        throw err;
      }
      const response: ApiResult = { status: 202, body: { ids: requests.map((r) => r.id) } };
      // Aborted at the deadline: records still queued in the producer are withdrawn rather than
      // written later, after the caller was told 503 (and may have retried without a key).
      const withdraw = new AbortController();
      const sent = withSpan(
        ctx.tracer,
        `send ${topics.pushRequests}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            'messaging.system': 'kafka',
            'messaging.operation.type': 'send',
            'messaging.operation.name': 'send',
            'messaging.destination.name': topics.pushRequests,
            'messaging.batch.message_count': requests.length,
            ...(requests.length === 1 && requests[0] ? { 'messaging.message.id': requests[0].id } : {}),
          },
        },
        async () => {
          // Injected inside the PRODUCER span, so the processor's span becomes its child.
          const headers = injectTraceHeaders();
          await ctx.producer.send(
            topics.pushRequests,
            requests.map((r) => ({ key: pushTargetKey(r.target), value: JSON.stringify(r), headers })),
            { signal: withdraw.signal },
          );
        },
      );
      let produced = await settleWithin(sent, config.PUSHLINE_API_PUBLISH_TIMEOUT_MS);
      if (produced.kind === 'deadline') {
        withdraw.abort();
        // A withdrawn send rejects within the microtasks the abort starts; one still in flight
        // does not settle before the next turn of the event loop.
        produced = await settledNow(sent, produced);
      }
      if (produced.kind !== 'acknowledged') {
        // Withdrawn at the deadline before it left: certainly not written. The key is still kept
        // like an unknown outcome's (a retry with the same body takes it over), which is all the
        // idempotency rules need; only the answer can say more.
        const withdrawn = produced.kind === 'failed' && produced.err instanceof SendWithdrawnError;
        // Kafka may still write what it was handed (a slow broker, or a failure after part of a
        // batch): the outcome is unknown. The claim stays, so a retry with the same key produces
        // the same ids; if the send completes after all, the answer is recorded for it.
        ctx.metrics.publishUnknown.inc({ cause: withdrawn ? 'deadline' : produced.kind });
        ctx.logger.error(
          {
            err: produced.kind === 'failed' ? produced.err : undefined,
            messages: requests.length,
            cause: produced.kind,
          },
          'producing push requests did not complete',
        );
        const unknown = owned
          ? await owned.markUnknown().catch((err: unknown) => {
              ctx.logger.warn({ err }, 'keeping an idempotency claim with an unknown outcome failed');
              return undefined;
            })
          : undefined;
        if (produced.kind === 'deadline') {
          sent
            .then(
              async () => {
                ctx.metrics.published.inc(requests.length);
                await unknown?.completeLate(response);
              },
              () => undefined,
            )
            .catch((err: unknown) => ctx.logger.warn({ err }, 'recording a late publish answer failed'));
        }
        throw new ProblemError(
          'service-unavailable',
          withdrawn
            ? `Kafka did not take the messages within ${config.PUSHLINE_API_PUBLISH_TIMEOUT_MS} ms; they were withdrawn and are not queued. Retry later.`
            : `Kafka did not acknowledge the messages${produced.kind === 'deadline' ? ` within ${config.PUSHLINE_API_PUBLISH_TIMEOUT_MS} ms` : ''}; they may or may not be queued. Retry with the same Idempotency-Key to make sure without duplicates.`,
          {
            retryAfterSeconds: PUBLISH_RETRY_AFTER_S,
            cause: produced.kind === 'failed' ? produced.err : undefined,
          },
        );
      }
      ctx.metrics.published.inc(requests.length);
      if (owned) {
        // The messages are queued whatever happens here; a lost record only weakens replay, so log it.
        await owned.complete(response).catch((err: unknown) => {
          ctx.logger.warn({ err }, 'recording an idempotent response failed');
        });
      }
      return response;
    },
  );
}

/** Retry-After of a publish whose outcome is unknown: about the time a broker takes to fail over. */
const PUBLISH_RETRY_AFTER_S = 2;

type Settled = { kind: 'acknowledged' } | { kind: 'failed'; err: unknown } | { kind: 'deadline' };

/** How `promise` settled by the end of this turn of the event loop, else `pending`. */
async function settledNow(promise: Promise<unknown>, pending: Settled): Promise<Settled> {
  return Promise.race([
    promise.then(
      (): Settled => ({ kind: 'acknowledged' }),
      (err: unknown): Settled => ({ kind: 'failed', err }),
    ),
    new Promise<Settled>((resolve) => setImmediate(() => resolve(pending))),
  ]);
}

/** How `promise` settled within `ms`; it keeps running past the deadline. */
async function settleWithin(promise: Promise<unknown>, ms: number): Promise<Settled> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise.then(
        (): Settled => ({ kind: 'acknowledged' }),
        (err: unknown): Settled => ({ kind: 'failed', err }),
      ),
      new Promise<Settled>((resolve) => {
        timer = setTimeout(() => resolve({ kind: 'deadline' }), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function releaseQuietly(
  ctx: ApiContext,
  claim: Extract<IdempotencyClaim, { kind: 'claimed' }>,
): Promise<void> {
  await claim
    .release()
    .catch((err: unknown) => ctx.logger.warn({ err }, 'releasing an idempotency claim failed'));
}

async function unavailableOnError<T>(ctx: ApiContext, what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof ProblemError) throw err;
    ctx.logger.error({ err }, `${what} failed`);
    throw new ProblemError('service-unavailable', `The ${what} is unreachable; retry later.`, {
      retryAfterSeconds: 1,
      cause: err,
    });
  }
}
