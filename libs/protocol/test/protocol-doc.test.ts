import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  AuthErrorCode,
  DeviceErrorCode,
  DeviceEvents,
  MAX_SEND_TIMEOUT_MS,
  ReconnectReason,
  SendRequest,
} from '@pushline/protocol';

const docs = join(import.meta.dirname, '..', '..', '..', 'docs');
const protocol = readFileSync(join(docs, 'protocol.md'), 'utf8');
const api = readFileSync(join(docs, 'api.md'), 'utf8');

describe('docs/protocol.md follows the device schemas', () => {
  test('names every event, error code and reconnect reason', () => {
    const names = [
      ...Object.values(DeviceEvents),
      ...DeviceErrorCode.options,
      ...AuthErrorCode.options,
      ...ReconnectReason.options,
    ];
    const missing = names.filter((name) => !protocol.includes(`\`${name}\``));
    assert.deepEqual(missing, []);
  });

  test('gives the same largest send timeout as the schema and docs/api.md', () => {
    assert.equal(
      SendRequest.safeParse({ to: 'd', payload: 1, timeoutMs: MAX_SEND_TIMEOUT_MS }).success,
      true,
    );
    assert.equal(
      SendRequest.safeParse({ to: 'd', payload: 1, timeoutMs: MAX_SEND_TIMEOUT_MS + 1 }).success,
      false,
    );
    const range = `1–${MAX_SEND_TIMEOUT_MS}`;
    assert.match(protocol, new RegExp(`\\|\\s*\`timeoutMs\`\\s*\\|\\s*${range}, optional`), 'protocol.md §4');
    assert.ok(api.includes(`How long to wait for the ack, ${range}.`), `api.md gives timeoutMs ${range}`);
    assert.ok(protocol.includes(`sender may choose 1 ms–${MAX_SEND_TIMEOUT_MS / 1000} s`), 'limits table');
    // No other largest timeout anywhere in the device protocol.
    assert.doesNotMatch(protocol, /up to 120 s|120[ ,]?000/);
  });

  test('lists every limit the device port enforces in §7', () => {
    const limits = protocol.slice(protocol.indexOf('## 7. Limits'), protocol.indexOf('## 8.'));
    const variables = [
      'PUSHLINE_MAX_HEADER_BYTES',
      'PUSHLINE_HANDSHAKE_TIMEOUT_MS',
      'PUSHLINE_MAX_PENDING_PER_ADDRESS',
      'PUSHLINE_CONNECT_PACKET_TIMEOUT_MS',
      'PUSHLINE_TOKEN_REFRESH_LEAD_S',
      'PUSHLINE_DEVICE_JWT_CLOCK_TOLERANCE_S',
      'PUSHLINE_MAX_FRAME_BYTES',
      'PUSHLINE_MAX_JSON_DEPTH',
      'PUSHLINE_DELIVERY_TIMEOUT_MS',
      'PUSHLINE_MAX_PAYLOAD_BYTES',
      'PUSHLINE_D2D_RATE_PER_S',
      'PUSHLINE_D2D_BURST',
      'PUSHLINE_DEVICE_REQUEST_RATE_PER_S',
      'PUSHLINE_DEVICE_REQUEST_BURST',
      'PUSHLINE_MAX_TOPICS_PER_DEVICE',
      'PUSHLINE_DEDUPE_WINDOW',
    ];
    assert.deepEqual(
      variables.filter((v) => !limits.includes(`\`${v}\``)),
      [],
    );
  });
});
