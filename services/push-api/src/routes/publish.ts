import { randomUUID } from 'node:crypto';
import { PushRequest, pushTargetKey } from '@pushline/protocol';
import { SpanKind, injectTraceHeaders, withSpan } from '@pushline/telemetry';
import { principalOf } from '../auth.ts';
import type { ApiContext } from '../context.ts';
import type { IdempotencyClaim } from '../idempotency.ts';
import { checkPayloadSize } from '../payload.ts';
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
      description: `Takes one message or a batch of up to ${config.PUSHLINE_MAX_BATCH}, writes them to the push-requests topic and answers 202 once Kafka acknowledged them on every in-sync replica. Delivery happens later in the message processor, which records one outcome per device on the delivery-events topic. Send an Idempotency-Key to make retries safe.`,
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
        'idempotency-conflict',
        'idempotency-key-reused',
        'service-unavailable',
      ],
    },
    async ({ body, req, res }) => {
      const batch = 'messages' in body;
      const messages = batch ? body.messages : [body];
      messages.forEach((m, i) =>
        checkPayloadSize(
          m.payload,
          batch ? `messages[${i}].payload` : 'payload',
          config.PUSHLINE_MAX_PAYLOAD_BYTES,
        ),
      );

      const idempotencyKey = req.get(IDEMPOTENCY_HEADER);
      let claim: IdempotencyClaim | undefined;
      if (idempotencyKey) {
        claim = await unavailableOnError(ctx, 'idempotency store', () =>
          ctx.idempotency.claim(principalOf(res).id, idempotencyKey, body),
        );
        if (claim.kind === 'replay') {
          ctx.metrics.idempotentReplays.inc();
          return { ...claim.response, headers: { [REPLAYED_HEADER]: 'true' } };
        }
      }
      const owned = claim;

      const createdAt = Date.now();
      const requests = messages.map((m) =>
        PushRequest.parse({
          v: 1,
          id: m.id ?? randomUUID(),
          target: m.target,
          payload: m.payload,
          ...(m.ttlSeconds !== undefined ? { ttlSeconds: m.ttlSeconds } : {}),
          createdAt,
        }),
      );
      try {
        await withSpan(
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
            );
          },
        );
      } catch (err) {
        if (owned?.kind === 'claimed') await releaseQuietly(ctx, owned);
        ctx.logger.error({ err, messages: requests.length }, 'producing push requests failed');
        throw new ProblemError('service-unavailable', 'Kafka did not accept the messages; retry later.', {
          retryAfterSeconds: 1,
          cause: err,
        });
      }
      ctx.metrics.published.inc(requests.length);
      const response: ApiResult = { status: 202, body: { ids: requests.map((r) => r.id) } };
      if (owned?.kind === 'claimed') {
        // The messages are queued whatever happens here; a lost record only weakens replay, so log it.
        await owned.complete(response).catch((err: unknown) => {
          ctx.logger.warn({ err }, 'recording an idempotent response failed');
        });
      }
      return response;
    },
  );
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
