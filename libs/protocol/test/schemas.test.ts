import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { z } from 'zod';
import {
  BroadcastRequest,
  BroadcastResult,
  CHANNEL_MAX_FRAME_CALLS,
  ChannelCall,
  ChannelCallsFrame,
  ChannelResult,
  ChannelResultsFrame,
  ConnectionEvent,
  DeliverRequest,
  DeliverResult,
  DeliveryEvent,
  DeviceErrorAck,
  DeviceMessage,
  DeviceMessageAck,
  DeviceTokenClaims,
  HandshakeAuth,
  Identifier,
  JSON_DEPTH_CEILING,
  JsonPayload,
  MAX_SEND_TIMEOUT_MS,
  MessageId,
  PushRequest,
  PushTarget,
  ReconnectHint,
  RefreshTokenAck,
  ReplacedNotice,
  SendAck,
  SendRequest,
  StoredMessage,
  SubscribeAck,
  SubscribeRequest,
  TokenExpiring,
  payloadBytes,
  pushTargetKey,
} from '@pushline/protocol';

/** One row: a value and whether the schema must take it (docs/protocol.md, docs/api.md, docs/internal-protocol.md). */
type Row = readonly [label: string, value: unknown, accepted: boolean];

function table(name: string, schema: z.ZodType, rows: readonly Row[]): void {
  describe(name, () => {
    for (const [label, value, accepted] of rows) {
      it(`${accepted ? 'accepts' : 'refuses'} ${label}`, () => {
        const result = schema.safeParse(value);
        assert.equal(
          result.success,
          accepted,
          result.success ? 'accepted' : JSON.stringify(result.error.issues),
        );
      });
    }
  });
}

/** A value nested `depth` arrays deep (a scalar is depth 0, as docs/protocol.md counts it). */
function nest(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

// "1–128 characters of `A–Z a–z 0–9 . _ : @ -`" (docs/protocol.md, docs/api.md).
const IDENTIFIER_ALPHABET = 'ABCXYZabcxyz0189._:@-';
// "message id (1–128 of `A–Z a–z 0–9 . _ : -`)": no `@`.
const MESSAGE_ID_ALPHABET = 'ABCXYZabcxyz0189._:-';

const identifier = fc
  .array(fc.constantFrom(...IDENTIFIER_ALPHABET), { minLength: 1, maxLength: 128 })
  .map((chars) => chars.join(''));
const messageId = fc
  .array(fc.constantFrom(...MESSAGE_ID_ALPHABET), { minLength: 1, maxLength: 128 })
  .map((chars) => chars.join(''));

describe('Identifier and MessageId (property)', () => {
  it('accept every string of 1–128 allowed characters', () => {
    fc.assert(fc.property(identifier, (id) => Identifier.safeParse(id).success));
    fc.assert(fc.property(messageId, (id) => MessageId.safeParse(id).success));
  });

  it('refuse any string with a character outside the set', () => {
    const outside = fc.string({ minLength: 1, maxLength: 4 }).filter((s) => /[^A-Za-z0-9._:@-]/.test(s));
    fc.assert(
      fc.property(identifier, outside, identifier, (a, bad, b) => {
        const id = `${a}${bad}${b}`.slice(0, 128);
        // Cut to 128 may drop the bad characters; only judge strings that still hold one.
        fc.pre(/[^A-Za-z0-9._:@-]/.test(id));
        return !Identifier.safeParse(id).success && !MessageId.safeParse(id).success;
      }),
    );
  });

  it('refuse any string past 128 characters', () => {
    fc.assert(
      fc.property(identifier, fc.integer({ min: 129, max: 400 }), (id, length) => {
        const long = id.repeat(Math.ceil(length / id.length)).slice(0, length);
        return !Identifier.safeParse(long).success && !MessageId.safeParse(long).success;
      }),
    );
  });
});

table('Identifier', Identifier, [
  ['one character', 'a', true],
  ['every allowed punctuation', 'a.b_c:d@e-f', true],
  ['128 characters', 'x'.repeat(128), true],
  ['the empty string', '', false],
  ['129 characters', 'x'.repeat(129), false],
  ['a space', 'a b', false],
  ['a slash', 'a/b', false],
  ['a brace (would break Redis hash tags)', 'a{b}', false],
  ['non-ASCII letters', 'é', false],
  ['a number', 42, false],
  ['null', null, false],
]);

table('MessageId', MessageId, [
  ['a uuid', '0d9d1a34-5b4b-4a53-8d39-3f2b5e0f2a11', true],
  ['dots, colons and underscores', 'a.b:c_d', true],
  ['an @ (identifiers only)', 'a@b', false],
  ['the empty string', '', false],
  ['129 characters', 'm'.repeat(129), false],
]);

table('JsonPayload', JsonPayload, [
  ['an object', { a: [1, 'two', null, true] }, true],
  ['a string', 'hello', true],
  ['null', null, true],
  ['a number', 0, true],
  [`a value ${JSON_DEPTH_CEILING} deep`, nest(JSON_DEPTH_CEILING), true],
  [`a value ${JSON_DEPTH_CEILING + 1} deep`, nest(JSON_DEPTH_CEILING + 1), false],
  ['undefined', undefined, false],
  ['a function', () => 1, false],
  ['NaN', Number.NaN, false],
  ['a bigint', 1n, false],
]);

describe('JsonPayload (property)', () => {
  it('accepts any JSON value that JSON.parse produces', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (value) => {
        const parsed: unknown = JSON.parse(JSON.stringify(value));
        return JsonPayload.safeParse(parsed).success;
      }),
    );
  });

  it('measures a payload as the bytes of its JSON text', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => {
        return payloadBytes(value) === Buffer.byteLength(JSON.stringify(value));
      }),
    );
    assert.equal(payloadBytes('é'), 4);
    assert.equal(payloadBytes(undefined), 4, 'undefined counts as null');
  });
});

// docs/protocol.md, "Connecting".
table('HandshakeAuth', HandshakeAuth, [
  ['a token', { token: 'a.b.c' }, true],
  ['no token', {}, false],
  ['an empty token', { token: '' }, false],
  ['a token past 8192 characters', { token: 't'.repeat(8193) }, false],
  ['a token of 8192 characters', { token: 't'.repeat(8192) }, true],
]);

const claims = { sub: 'dev-1', uid: 'user-1', exp: 1_900_000_000 };
table('DeviceTokenClaims', DeviceTokenClaims, [
  ['sub, uid and exp', claims, true],
  ['a tenant and topics', { ...claims, tid: 'acme', topics: ['news', 'sport.*'] }, true],
  ['no sub', { uid: 'user-1', exp: 1 }, false],
  ['no uid', { sub: 'dev-1', exp: 1 }, false],
  ['no exp', { sub: 'dev-1', uid: 'user-1' }, false],
  ['a fractional exp', { ...claims, exp: 1.5 }, false],
  ['a sub with a space', { ...claims, sub: 'dev 1' }, false],
  ['257 topics', { ...claims, topics: Array.from({ length: 257 }, (_, i) => `t${i}`) }, false],
  ['256 topics', { ...claims, topics: Array.from({ length: 256 }, (_, i) => `t${i}`) }, true],
  ['a topic past 128 characters', { ...claims, topics: ['t'.repeat(129)] }, false],
]);

// docs/protocol.md, "Receiving messages".
const deviceMessage = { id: 'm-1', payload: { hello: 'world' }, sentAt: 1_700_000_000_000 };
table('DeviceMessage', DeviceMessage, [
  ['id, payload and sentAt', deviceMessage, true],
  ['a device-to-device message', { ...deviceMessage, from: 'dev-2' }, true],
  ['a broadcast', { ...deviceMessage, topic: 'news' }, true],
  ['trace context', { ...deviceMessage, traceparent: '00-abc-def-01', tracestate: 'x=y' }, true],
  ['no payload', { id: 'm-1', sentAt: 1 }, false],
  ['no id', { payload: 1, sentAt: 1 }, false],
  ['a fractional sentAt', { ...deviceMessage, sentAt: 1.5 }, false],
]);

table('DeviceMessageAck', DeviceMessageAck, [
  ['ok', { ok: true }, true],
  ['a refusal with a reason', { ok: false, reason: 'not now' }, true],
  ['a refusal without a reason', { ok: false }, true],
  ['a reason past 256 characters', { ok: false, reason: 'r'.repeat(257) }, false],
  ['no ok', {}, false],
  ['ok as a string', { ok: 'true' }, false],
]);

// docs/protocol.md, "Sending to another device": timeoutMs 1–30000, optional.
table('SendRequest', SendRequest, [
  ['to and payload', { to: 'dev-2', payload: { a: 1 } }, true],
  ['an id and a timeout', { to: 'dev-2', payload: 1, id: 'm-1', timeoutMs: 5_000 }, true],
  ['the largest timeout', { to: 'dev-2', payload: 1, timeoutMs: MAX_SEND_TIMEOUT_MS }, true],
  ['a timeout past the largest', { to: 'dev-2', payload: 1, timeoutMs: MAX_SEND_TIMEOUT_MS + 1 }, false],
  ['a zero timeout', { to: 'dev-2', payload: 1, timeoutMs: 0 }, false],
  ['a fractional timeout', { to: 'dev-2', payload: 1, timeoutMs: 1.5 }, false],
  ['no target', { payload: 1 }, false],
  ['no payload', { to: 'dev-2' }, false],
  ['a bad target', { to: 'dev/2', payload: 1 }, false],
]);

const errorAck = { ok: false, error: { code: 'rate_limited', message: 'slow down' } };
table('DeviceErrorAck', DeviceErrorAck, [
  ['a coded error', errorAck, true],
  [
    'token_rejected with its reason',
    { ok: false, error: { code: 'token_rejected', message: 'x', reason: 'token_expired' } },
    true,
  ],
  ['an unknown code', { ok: false, error: { code: 'oops', message: 'x' } }, false],
  ['an unknown reason', { ok: false, error: { code: 'token_rejected', message: 'x', reason: 'no' } }, false],
  ['ok true', { ok: true, error: { code: 'internal', message: 'x' } }, false],
]);

table('SendAck', SendAck, [
  ['a delivered answer', { ok: true, id: 'm-1', outcome: 'delivered', latencyMs: 3 }, true],
  ['a not_connected answer', { ok: true, id: 'm-1', outcome: 'not_connected', latencyMs: 0 }, true],
  ['an error ack', errorAck, true],
  ['an unknown outcome', { ok: true, id: 'm-1', outcome: 'lost', latencyMs: 0 }, false],
  ['a negative latency', { ok: true, id: 'm-1', outcome: 'delivered', latencyMs: -1 }, false],
]);

table('SubscribeRequest', SubscribeRequest, [
  ['a topic', { topic: 'news' }, true],
  ['a topic past 128 characters', { topic: 't'.repeat(129) }, false],
  ['an empty topic', { topic: '' }, false],
  ['no topic', {}, false],
]);

table('SubscribeAck', SubscribeAck, [
  ['ok with the topic', { ok: true, topic: 'news' }, true],
  ['an error ack', { ok: false, error: { code: 'forbidden', message: 'no' } }, true],
  ['ok without the topic', { ok: true }, false],
]);

table('ReconnectHint', ReconnectHint, [
  ['a shutdown now', { reason: 'server_shutdown', afterMs: 0 }, true],
  ['an idle close', { reason: 'idle', afterMs: 0 }, true],
  ['a token expiry', { reason: 'token_expired', afterMs: 10 }, true],
  ['a negative wait', { reason: 'replaced', afterMs: -1 }, false],
  ['an unknown reason', { reason: 'bored', afterMs: 0 }, false],
]);

table('TokenExpiring', TokenExpiring, [
  ['both times', { expiresAt: 2, disconnectAt: 3 }, true],
  ['no disconnectAt', { expiresAt: 2 }, false],
]);

table('RefreshTokenAck', RefreshTokenAck, [
  ['ok with the new expiry', { ok: true, expiresAt: 1 }, true],
  [
    'a rejected token',
    { ok: false, error: { code: 'token_rejected', message: 'x', reason: 'token_invalid_signature' } },
    true,
  ],
  ['ok without an expiry', { ok: true }, false],
]);

// docs/api.md: targets are a device, a user or a topic.
table('PushTarget', PushTarget, [
  ['a device', { type: 'device', id: 'dev-1' }, true],
  ['a user', { type: 'user', id: 'user-1' }, true],
  ['a topic', { type: 'topic', id: 'news' }, true],
  ['a tenant', { type: 'tenant', id: 'acme' }, false],
  ['a bad id', { type: 'device', id: 'a b' }, false],
  ['no id', { type: 'device' }, false],
]);

describe('pushTargetKey', () => {
  it('keys a request by its target type and id, so each target keeps one order', () => {
    assert.equal(pushTargetKey({ type: 'device', id: 'd' }), 'device:d');
    assert.equal(pushTargetKey({ type: 'user', id: 'd' }), 'user:d');
    fc.assert(
      fc.property(fc.constantFrom('device', 'user', 'topic' as const), identifier, (type, id) => {
        return pushTargetKey({ type, id }) === `${type}:${id}`;
      }),
    );
  });
});

const pushRequest = {
  v: 1,
  id: 'req-1',
  target: { type: 'device', id: 'dev-1' },
  payload: { a: 1 },
  createdAt: 1_700_000_000_000,
};
// docs/api.md: ttlSeconds 0–2592000 (30 days).
table('PushRequest', PushRequest, [
  ['a minimal request', pushRequest, true],
  ['an origin and a ttl', { ...pushRequest, origin: 'key-1', ttlSeconds: 60 }, true],
  ['a ttl of 0', { ...pushRequest, ttlSeconds: 0 }, true],
  ['a ttl of 30 days', { ...pushRequest, ttlSeconds: 2_592_000 }, true],
  ['a ttl past 30 days', { ...pushRequest, ttlSeconds: 2_592_001 }, false],
  ['a negative ttl', { ...pushRequest, ttlSeconds: -1 }, false],
  ['version 2', { ...pushRequest, v: 2 }, false],
  ['no version', { ...pushRequest, v: undefined }, false],
  ['no createdAt', { ...pushRequest, createdAt: undefined }, false],
  ['no payload', { ...pushRequest, payload: undefined }, false],
  ['a bad target', { ...pushRequest, target: { type: 'device', id: '' } }, false],
]);

const deliveryEvent = {
  v: 1,
  requestId: 'req-1',
  target: { type: 'device', id: 'dev-1' },
  deviceId: 'dev-1',
  outcome: 'delivered',
  terminal: true,
  source: 'async',
  latencyMs: 12,
  attempts: 1,
  at: 1_700_000_000_000,
};
table('DeliveryEvent', DeliveryEvent, [
  ['a delivered event', deliveryEvent, true],
  [
    'a stored, non-terminal event',
    { ...deliveryEvent, outcome: 'not_connected', stored: true, terminal: false },
    true,
  ],
  [
    'an expired event from the offline path',
    { ...deliveryEvent, outcome: 'expired', source: 'offline', reason: 'ttl_elapsed' },
    true,
  ],
  [
    'a broadcast aggregate',
    { ...deliveryEvent, target: { type: 'topic', id: 'news' }, deviceId: undefined, deliveredCount: 3 },
    true,
  ],
  ['zero attempts', { ...deliveryEvent, attempts: 0 }, false],
  ['an unknown source', { ...deliveryEvent, source: 'carrier-pigeon' }, false],
  ['an unknown outcome', { ...deliveryEvent, outcome: 'maybe' }, false],
  ['a reason past 256 characters', { ...deliveryEvent, reason: 'r'.repeat(257) }, false],
  ['no terminal flag', { ...deliveryEvent, terminal: undefined }, false],
]);

const connected = {
  v: 1,
  type: 'connected',
  deviceId: 'dev-1',
  userId: 'user-1',
  serverId: 'cs-1',
  connectionId: 'c-1',
  at: 1,
};
table('ConnectionEvent', ConnectionEvent, [
  ['a connect', connected, true],
  ['a connect with a tenant', { ...connected, tenantId: 'acme' }, true],
  ['a disconnect', { ...connected, type: 'disconnected', reason: 'ping_timeout', durationMs: 5 }, true],
  ['a disconnect without a reason', { ...connected, type: 'disconnected', durationMs: 5 }, false],
  [
    'a disconnect with an unknown reason',
    { ...connected, type: 'disconnected', reason: 'x', durationMs: 5 },
    false,
  ],
  ['an unknown type', { ...connected, type: 'moved' }, false],
  ['version 2', { ...connected, v: 2 }, false],
]);

const stored = {
  v: 1,
  requestId: 'req-1',
  target: { type: 'user', id: 'user-1' },
  payload: 'hi',
  createdAt: 1,
  expiresAt: 2,
  attempts: 1,
};
table('StoredMessage', StoredMessage, [
  ['a stored message', stored, true],
  ['no attempts yet', { ...stored, attempts: 0 }, true],
  ['negative attempts', { ...stored, attempts: -1 }, false],
  ['no expiresAt', { ...stored, expiresAt: undefined }, false],
]);

// docs/internal-protocol.md: deliver and broadcast calls over the channel.
const deliver = {
  messageId: 'm-1',
  deviceId: 'dev-1',
  payload: { a: 1 },
  source: 'direct',
  timeoutMs: 5_000,
};
table('DeliverRequest', DeliverRequest, [
  ['a direct delivery', deliver, true],
  ['pinned to a connection', { ...deliver, connectionId: 'c-1' }, true],
  [
    'a device-to-device delivery',
    { ...deliver, source: 'd2d', from: 'dev-2', fromUser: 'u', fromTenant: 't' },
    true,
  ],
  ['the largest timeout', { ...deliver, timeoutMs: 120_000 }, true],
  ['a timeout past the largest', { ...deliver, timeoutMs: 120_001 }, false],
  ['a connection id past 64 characters', { ...deliver, connectionId: 'c'.repeat(65) }, false],
  ['an unknown source', { ...deliver, source: 'fax' }, false],
]);

table('DeliverResult', DeliverResult, [
  ['delivered', { outcome: 'delivered', latencyMs: 2 }, true],
  ['a duplicate', { outcome: 'delivered', latencyMs: 0, duplicate: true }, true],
  ['expired (only the offline path records it)', { outcome: 'expired', latencyMs: 0 }, false],
]);

table('BroadcastRequest', BroadcastRequest, [
  ['a broadcast', { messageId: 'm-1', topic: 'news', payload: 1, timeoutMs: 1_000 }, true],
  ['no topic', { messageId: 'm-1', payload: 1, timeoutMs: 1_000 }, false],
]);

table('BroadcastResult', BroadcastResult, [
  ['a count', { delivered: 3, latencyMs: 1 }, true],
  ['a negative count', { delivered: -1, latencyMs: 1 }, false],
]);

table('ReplacedNotice', ReplacedNotice, [
  ['a device and connection', { deviceId: 'dev-1', connectionId: 'c-1' }, true],
  ['an empty connection id', { deviceId: 'dev-1', connectionId: '' }, false],
]);

table('ChannelCall', ChannelCall, [
  ['a deliver call', { id: 0, op: 'deliver', req: deliver }, true],
  [
    'a broadcast call',
    { id: 1, op: 'broadcast', req: { messageId: 'm', topic: 't', payload: 1, timeoutMs: 1 } },
    true,
  ],
  ['a replaced call', { id: 2, op: 'replaced', req: { deviceId: 'd', connectionId: 'c' } }, true],
  ['an unknown op', { id: 3, op: 'kick', req: {} }, false],
  ['a negative id', { id: -1, op: 'deliver', req: deliver }, false],
  ['a fractional id', { id: 1.5, op: 'deliver', req: deliver }, false],
  [
    'a deliver call without a payload',
    { id: 0, op: 'deliver', req: { ...deliver, payload: undefined } },
    false,
  ],
]);

table('ChannelCallsFrame', ChannelCallsFrame, [
  ['one call', { calls: [{ id: 0, op: 'deliver', req: deliver }] }, true],
  ['no calls', { calls: [] }, false],
  [
    `${CHANNEL_MAX_FRAME_CALLS + 1} calls`,
    {
      calls: Array.from({ length: CHANNEL_MAX_FRAME_CALLS + 1 }, (_, id) => ({
        id,
        op: 'deliver',
        req: deliver,
      })),
    },
    false,
  ],
]);

table('ChannelResult', ChannelResult, [
  ['a deliver result', { id: 0, deliver: { outcome: 'delivered', latencyMs: 1 } }, true],
  ['an error', { id: 0, error: { code: 'window_exceeded', message: 'too many' } }, true],
  ['an unknown error code', { id: 0, error: { code: 'nope', message: 'x' } }, false],
  [
    'an error message past 1024 characters',
    { id: 0, error: { code: 'internal_error', message: 'x'.repeat(1025) } },
    false,
  ],
]);

table('ChannelResultsFrame', ChannelResultsFrame, [
  ['one result', { results: [{ id: 0, replaced: { closed: true } }] }, true],
  ['no results', { results: [] }, false],
]);

describe('round trips (property)', () => {
  it('a valid PushRequest survives JSON and parses to itself', () => {
    const request = fc.record(
      {
        v: fc.constant(1 as const),
        id: messageId,
        origin: identifier,
        target: fc.record({ type: fc.constantFrom('device', 'user', 'topic' as const), id: identifier }),
        payload: fc.jsonValue({ maxDepth: 4 }),
        ttlSeconds: fc.integer({ min: 0, max: 2_592_000 }),
        createdAt: fc.integer({ min: 0, max: 2 ** 45 }),
      },
      { requiredKeys: ['v', 'id', 'target', 'payload', 'createdAt'] },
    );
    fc.assert(
      fc.property(request, (value) => {
        const wire: unknown = JSON.parse(JSON.stringify(value));
        const parsed = PushRequest.safeParse(wire);
        return parsed.success && JSON.stringify(parsed.data) === JSON.stringify(wire);
      }),
    );
  });

  it('a SendRequest timeout is accepted exactly on 1–30000 integers', () => {
    fc.assert(
      fc.property(fc.integer({ min: -100_000, max: 100_000 }), (timeoutMs) => {
        const accepted = SendRequest.safeParse({ to: 'd', payload: 1, timeoutMs }).success;
        return accepted === (timeoutMs >= 1 && timeoutMs <= MAX_SEND_TIMEOUT_MS);
      }),
    );
  });

  it('a PushRequest ttl is accepted exactly on 0–2592000 integers', () => {
    fc.assert(
      fc.property(fc.integer({ min: -10_000_000, max: 10_000_000 }), (ttlSeconds) => {
        const accepted = PushRequest.safeParse({ ...pushRequest, ttlSeconds }).success;
        return accepted === (ttlSeconds >= 0 && ttlSeconds <= 2_592_000);
      }),
    );
  });
});
