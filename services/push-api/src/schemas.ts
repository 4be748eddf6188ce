import { z } from 'zod';
import { Identifier, JsonPayload, MessageId, PushTarget } from '@pushline/protocol';

/** The longest a direct push may wait for a device ack; an HTTP request should not hang longer. */
const MAX_DIRECT_TIMEOUT_MS = 30_000;
/** 30 days, the longest a message is kept for an offline device (same bound as PushRequest). */
const MAX_TTL_SECONDS = 2_592_000;

export interface SchemaLimits {
  /** Most messages in one POST /v1/publish. */
  readonly maxBatch: number;
  /** Largest payload in JSON bytes (documented; checked by the routes, which answer 413). */
  readonly maxPayloadBytes: number;
  /** Ack timeout of a direct push that does not ask for one. */
  readonly defaultTimeoutMs: number;
}

/**
 * The API's request and response schemas. Routes validate with them and the OpenAPI document is
 * generated from them, so the document cannot drift from what the server does. Built per
 * instance because some limits come from configuration.
 */
export function buildSchemas(limits: SchemaLimits) {
  const payload = JsonPayload.describe(
    `Any JSON value, delivered to the device as is. At most ${limits.maxPayloadBytes} bytes once serialised.`,
  );
  const messageId = MessageId.describe(
    'Message id; generated when absent. Devices receive it and may use it to drop duplicates.',
  );
  const ttlSeconds = z
    .number()
    .int()
    .min(0)
    .max(MAX_TTL_SECONDS)
    .describe(
      'Seconds to keep the message for the device when it cannot be delivered now (store-and-forward). 0 or absent: deliver now or never.',
    );
  const timeoutMs = z
    .number()
    .int()
    .min(1)
    .max(MAX_DIRECT_TIMEOUT_MS)
    .describe(`How long to wait for the device ack. Default ${limits.defaultTimeoutMs}.`);
  const latencyMs = z
    .number()
    .nonnegative()
    .describe('From the server emitting the message to the ack (or the timeout).');

  const DeviceParams = z.object({ deviceId: Identifier });
  const UserParams = z.object({ userId: Identifier });
  const TopicParams = z.object({ topic: Identifier });
  const NoParams = z.object({});

  const DirectPushBody = z.strictObject({
    payload,
    id: messageId.optional(),
    timeoutMs: timeoutMs.optional(),
    ttlSeconds: ttlSeconds.optional(),
  });
  const TopicPushBody = z.strictObject({
    payload,
    id: messageId.optional(),
    timeoutMs: timeoutMs.optional(),
  });

  const LiveOutcome = z.enum(['delivered', 'not_connected', 'timeout', 'rejected']);
  const DirectOutcome = z
    .enum(['delivered', 'not_connected', 'timeout', 'rejected', 'stored'])
    .describe(
      'delivered: the device acked. not_connected: no live connection. timeout: no ack in time. rejected: the device acked `{ok:false}`. stored: not delivered now, kept for the device (ttlSeconds).',
    );

  const DeviceOutcome = z.object({
    deviceId: Identifier,
    outcome: DirectOutcome,
    latencyMs,
    reason: z
      .string()
      .optional()
      .describe('Why it was not delivered: the device reason for `rejected`, the live outcome for `stored`.'),
    duplicate: z
      .boolean()
      .optional()
      .describe('The connection had already received this id; it was not sent again.'),
  });

  const DirectPushResult = DeviceOutcome.extend({ id: MessageId });
  const UserPushResult = z.object({
    id: MessageId,
    userId: Identifier,
    results: z
      .array(DeviceOutcome)
      .describe('One entry per device of the user connected now; empty when none is.'),
    failed: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        'Devices whose delivery failed inside the platform (not a device outcome); they are missing from `results`.',
      ),
  });
  const TopicPushResult = z.object({
    id: MessageId,
    topic: Identifier,
    delivered: z
      .number()
      .int()
      .nonnegative()
      .describe('Subscribers that acked within the timeout, on every server.'),
    latencyMs: z.number().nonnegative(),
  });

  const PublishMessage = z.strictObject({
    id: messageId.optional(),
    target: PushTarget,
    payload,
    ttlSeconds: ttlSeconds.optional(),
  });
  const PublishBatch = z.strictObject({
    messages: z
      .array(PublishMessage)
      .min(1)
      .max(limits.maxBatch)
      .describe(`1 to ${limits.maxBatch} messages, produced together.`),
  });
  const PublishBody = z.union([PublishMessage, PublishBatch]);
  const PublishResult = z.object({
    ids: z.array(MessageId).describe('Ids of the accepted messages, in request order.'),
  });

  const PresenceResult = z.object({
    deviceId: Identifier,
    online: z.boolean(),
    userId: Identifier.optional(),
    serverId: z.string().optional().describe('Connection server holding the device.'),
    connectedAt: z.number().int().optional().describe('Milliseconds since epoch.'),
    lastSeen: z.number().int().optional().describe('Milliseconds since epoch of the last registry refresh.'),
  });
  const UserDevice = z.object({
    deviceId: Identifier,
    serverId: z.string(),
    connectedAt: z.number().int(),
    lastSeen: z.number().int(),
  });
  const UserDevicesResult = z.object({
    userId: Identifier,
    devices: z.array(UserDevice).describe('The user’s devices connected now.'),
  });

  const IdempotencyKey = z
    .string()
    .min(1)
    .max(255)
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')
    .describe(
      'Makes the request safe to retry: a repeat with the same key (per API key) within the retention period gets the first response and produces nothing.',
    );

  const OpenApiDocument = z.record(z.string(), z.unknown()).describe('This document.');

  return {
    DeviceParams,
    UserParams,
    TopicParams,
    NoParams,
    DirectPushBody,
    TopicPushBody,
    LiveOutcome,
    DirectOutcome,
    DeviceOutcome,
    DirectPushResult,
    UserPushResult,
    TopicPushResult,
    PublishMessage,
    PublishBatch,
    PublishBody,
    PublishResult,
    PresenceResult,
    UserDevice,
    UserDevicesResult,
    IdempotencyKey,
    OpenApiDocument,
  };
}

export type ApiSchemas = ReturnType<typeof buildSchemas>;

/** Names of the schemas in `components.schemas` of the OpenAPI document. */
export const COMPONENT_NAMES: Partial<Record<keyof ApiSchemas, string>> = {
  DirectPushBody: 'DirectPushRequest',
  TopicPushBody: 'TopicPushRequest',
  DeviceOutcome: 'DeviceOutcome',
  DirectOutcome: 'Outcome',
  DirectPushResult: 'DirectPushResult',
  UserPushResult: 'UserPushResult',
  TopicPushResult: 'TopicPushResult',
  PublishMessage: 'PublishMessage',
  PublishBatch: 'PublishBatch',
  PublishBody: 'PublishRequest',
  PublishResult: 'PublishResult',
  PresenceResult: 'Presence',
  UserDevice: 'UserDevice',
  UserDevicesResult: 'UserDevices',
};
