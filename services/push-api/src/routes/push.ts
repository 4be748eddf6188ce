import { randomUUID } from 'node:crypto';
import { StoredMessage, type PushTarget, type TraceContext } from '@pushline/protocol';
import { RegistryIncompleteError } from '@pushline/registry';
import { injectTraceHeaders } from '@pushline/telemetry';
import { principalOf } from '../auth.ts';
import type { ApiContext } from '../context.ts';
import { checkPayload } from '../payload.ts';
import type { RoutedResult } from '../ports.ts';
import { ProblemError, registryRestoringProblem } from '../problem.ts';
import type { RouteTable } from '../routing.ts';

/** HTTP status of a direct push to one device, by outcome. The body always carries the outcome. */
const DIRECT_PUSH_STATUS = {
  delivered: 200,
  stored: 202,
  not_connected: 404,
  rejected: 422,
  timeout: 504,
} as const;

type DirectOutcome = keyof typeof DIRECT_PUSH_STATUS;

interface DeviceOutcomeBody {
  deviceId: string;
  outcome: DirectOutcome;
  latencyMs: number;
  reason?: string;
  duplicate?: boolean;
}

/** Outcomes after which a message with a ttl is kept for the device; `rejected` is the device's answer and final. */
const STORE_AFTER = new Set<string>(['not_connected', 'timeout']);

export function registerPushRoutes(table: RouteTable, ctx: ApiContext): void {
  const { schemas, config } = ctx;
  const maxPayload = config.PUSHLINE_MAX_PAYLOAD_BYTES;
  const pushProblems = ['payload-too-large', 'json-too-deep', 'service-unavailable'] as const;
  /** What every direct push hands the router, once its payload is within the limit. */
  const directMessage = (
    body: {
      payload: unknown;
      id?: string | undefined;
      timeoutMs?: number | undefined;
    },
    /** The API key's id: the connection server remembers sent ids per origin. */
    origin: string,
  ) => {
    checkPayload(body.payload, 'payload', { maxBytes: maxPayload, maxDepth: config.PUSHLINE_MAX_JSON_DEPTH });
    return {
      messageId: body.id ?? randomUUID(),
      payload: body.payload,
      source: 'direct' as const,
      origin,
      timeoutMs: body.timeoutMs ?? config.PUSHLINE_DELIVERY_TIMEOUT_MS,
      trace: injectTraceHeaders(),
    };
  };

  table.add(
    {
      method: 'post',
      path: '/v1/devices/:deviceId/messages',
      operationId: 'pushToDevice',
      summary: 'Push a message to one device and wait for its ack',
      description:
        'Routes the message to the connection server holding the device and answers once the device acked, refused, or the timeout passed. The body always carries `outcome`; the status mirrors it: 200 delivered, 202 stored (ttlSeconds set and the device could not take it now), 404 not_connected, 422 rejected, 504 timeout.',
      tag: 'push',
      scope: 'push',
      params: schemas.DeviceParams,
      body: schemas.DirectPushBody,
      responses: {
        200: { description: 'Delivered: the device acked.', schema: schemas.DirectPushResult },
        202: {
          description:
            'Stored: not deliverable now (not_connected or timeout), kept for ttlSeconds and delivered when the device reconnects.',
          schema: schemas.DirectPushResult,
        },
        404: {
          description: 'not_connected: the device has no live connection.',
          schema: schemas.DirectPushResult,
        },
        422: {
          description: 'rejected: the device acked `{ok:false}`; `reason` carries its reason.',
          schema: schemas.DirectPushResult,
        },
        504: {
          description:
            'timeout: no ack within timeoutMs, or the connection server was lost mid-request (reason `server_lost`). The device may have received it.',
          schema: schemas.DirectPushResult,
        },
      },
      problems: [...pushProblems, 'quota-exceeded'],
    },
    async ({ params, body, res }) => {
      const origin = principalOf(res).id;
      const msg = directMessage(body, origin);
      const { messageId: id, trace } = msg;
      const result = await route(ctx, () => ctx.router.toDevice(params.deviceId, msg));
      const settled = await settle(ctx, result, {
        id,
        origin,
        target: { type: 'device', id: params.deviceId },
        payload: body.payload,
        ttlSeconds: body.ttlSeconds,
        trace,
      });
      if (settled.refused) {
        throw new ProblemError(
          'quota-exceeded',
          `The message was not stored: this API key has reached its quota of stored messages (PUSHLINE_OFFLINE_QUOTA_MESSAGES / _BYTES). The live attempt ended ${result.outcome}.`,
        );
      }
      return { status: DIRECT_PUSH_STATUS[settled.outcome], body: { id, ...settled.body } };
    },
  );

  table.add(
    {
      method: 'post',
      path: '/v1/users/:userId/messages',
      operationId: 'pushToUser',
      summary: 'Push a message to every connected device of a user',
      description:
        'Delivers to each of the user’s connected devices in parallel and reports one outcome per device. With ttlSeconds, devices that could not take it now get it stored. A user with no connected device gets an empty list (the registry only knows connected devices, so nothing can be stored for them).',
      tag: 'push',
      scope: 'push',
      params: schemas.UserParams,
      body: schemas.DirectPushBody,
      responses: {
        200: { description: 'One outcome per connected device.', schema: schemas.UserPushResult },
      },
      problems: pushProblems,
    },
    async ({ params, body, res }) => {
      const origin = principalOf(res).id;
      const msg = directMessage(body, origin);
      const { messageId: id, trace } = msg;
      let failed = 0;
      const results = await route(ctx, () =>
        ctx.router.toUser(params.userId, msg).catch((err: unknown) => {
          // Some devices got an outcome and others hit an error: report what is known rather
          // than a 503 that would make the caller re-send to devices that already have it.
          const partial = partialResults(err);
          if (!partial) throw err;
          failed = partial.failed;
          ctx.logger.warn({ err, userId: params.userId, failed }, 'some deliveries of a user push failed');
          return partial.results;
        }),
      );
      const settled = await Promise.all(
        results.map(async (result) => {
          const done = await settle(ctx, result, {
            id,
            origin,
            target: { type: 'user', id: params.userId },
            payload: body.payload,
            ttlSeconds: body.ttlSeconds,
            trace,
          });
          // One device over the quota must not hide the others' outcomes: it says so in its entry.
          return done.refused ? { ...done.body, reason: 'quota_exceeded' } : done.body;
        }),
      );
      return {
        status: 200,
        body: { id, userId: params.userId, results: settled, ...(failed > 0 ? { failed } : {}) },
      };
    },
  );

  table.add(
    {
      method: 'post',
      path: '/v1/topics/:topic/messages',
      operationId: 'pushToTopic',
      summary: 'Broadcast a message to a topic’s subscribers on every server',
      description:
        'One connection server emits to the topic room through the shared adapter, so subscribers on every server receive it; `delivered` counts the subscribers that acked within timeoutMs.',
      tag: 'push',
      scope: 'push',
      params: schemas.TopicParams,
      body: schemas.TopicPushBody,
      responses: {
        200: { description: 'Broadcast done; `delivered` may be 0.', schema: schemas.TopicPushResult },
      },
      problems: [...pushProblems, 'delivery-unknown'],
    },
    async ({ params, body, res }) => {
      const msg = directMessage(body, principalOf(res).id);
      const id = msg.messageId;
      const result = await route(ctx, () => ctx.router.toTopic(params.topic, msg), {
        // The server may have broadcast before it was lost: a retry could deliver twice.
        mayHaveDelivered: (err) => {
          const failure = (err as { failure?: unknown } | null)?.failure;
          return failure === 'server_lost' || failure === 'server_timeout';
        },
      });
      return {
        status: 200,
        body: { id, topic: params.topic, delivered: result.delivered, latencyMs: result.latencyMs },
      };
    },
  );
}

/** The outcomes inside a partial fan-out failure (`PartialDeliveryError` of @pushline/delivery). */
function partialResults(err: unknown): { results: RoutedResult[]; failed: number } | undefined {
  if (!(err instanceof AggregateError)) return undefined;
  const results: unknown = (err as { results?: unknown }).results;
  if (!Array.isArray(results)) return undefined;
  return { results: results as RoutedResult[], failed: err.errors.length };
}

/**
 * Runs a routing call; a failure there (registry or every server unreachable) is a 503, not a 500,
 * unless the message may have been delivered already: then a 504 `delivery-unknown`, which does
 * not invite a blind retry.
 */
async function route<T>(
  ctx: ApiContext,
  call: () => Promise<T>,
  options: { mayHaveDelivered?: (err: unknown) => boolean } = {},
): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof RegistryIncompleteError) {
      // No message left: the device may be connected and not yet written back after Redis lost it.
      ctx.logger.warn({ err }, 'a direct push waits for the registry to be restored');
      throw registryRestoringProblem(err);
    }
    ctx.logger.error({ err }, 'routing a direct push failed');
    if (options.mayHaveDelivered?.(err)) {
      throw new ProblemError(
        'delivery-unknown',
        'The connection server was lost or gave no answer mid-request; subscribers may have the message.',
        { cause: err },
      );
    }
    throw new ProblemError('service-unavailable', 'Routing the message failed; retry later.', {
      retryAfterSeconds: 1,
      cause: err,
    });
  }
}

/**
 * Turns a live outcome into the answer: with a ttl and an offline store, a message the device could
 * not take now is stored and reported as `stored`. Counts the live outcome (the router's stage
 * counts the same, so the two add up; a stored push is also counted by the store).
 */
async function settle(
  ctx: ApiContext,
  result: RoutedResult,
  msg: {
    id: string;
    origin: string;
    target: PushTarget;
    payload: unknown;
    ttlSeconds: number | undefined;
    trace: TraceContext;
  },
): Promise<{ outcome: DirectOutcome; body: DeviceOutcomeBody; refused: boolean }> {
  ctx.metrics.pushOutcomes.inc({ outcome: result.outcome });
  if (result.outcome === 'delivered') ctx.metrics.pushToAckSeconds.observe(result.latencyMs / 1000);
  const live: DeviceOutcomeBody = {
    deviceId: result.deviceId,
    outcome: result.outcome,
    latencyMs: result.latencyMs,
    ...(result.reason !== undefined ? { reason: result.reason } : {}),
    ...(result.duplicate !== undefined ? { duplicate: result.duplicate } : {}),
  };
  const ttl = msg.ttlSeconds ?? 0;
  if (!(ttl > 0 && ctx.offlineStore && STORE_AFTER.has(result.outcome))) {
    return { outcome: result.outcome, body: live, refused: false };
  }
  const now = Date.now();
  try {
    const stored = await ctx.offlineStore.store(
      result.deviceId,
      StoredMessage.parse({
        v: 1,
        requestId: msg.id,
        origin: msg.origin,
        target: msg.target,
        payload: msg.payload,
        createdAt: now,
        expiresAt: now + ttl * 1000,
        attempts: 1,
        ...msg.trace,
      }),
    );
    if (stored.stored) {
      return {
        outcome: 'stored',
        body: {
          deviceId: result.deviceId,
          outcome: 'stored',
          latencyMs: result.latencyMs,
          reason: result.outcome,
        },
        refused: false,
      };
    }
    return { outcome: result.outcome, body: live, refused: stored.refused === 'quota_exceeded' };
  } catch (err) {
    ctx.metrics.storeFailures.inc();
    ctx.logger.error({ err, messageId: msg.id }, 'storing a message for an offline device failed');
    return { outcome: result.outcome, body: live, refused: false };
  }
}
