import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SignJWT } from 'jose';
import { fullJitterDelayMs, parseTraceparent, tokenExpiryMs } from '@pushline/client';

// Unit tests of the SDK's pure logic; its behaviour against the platform is in test/client/.

test('full jitter: uniform below an exponential ceiling that stops at the cap', () => {
  assert.equal(
    fullJitterDelayMs(0, 1000, 60_000, () => 0.999),
    999,
  );
  assert.equal(
    fullJitterDelayMs(3, 1000, 60_000, () => 0.5),
    4000,
  );
  assert.equal(
    fullJitterDelayMs(20, 1000, 60_000, () => 0.5),
    30_000,
  );
  assert.equal(
    fullJitterDelayMs(500, 1000, 60_000, () => 0.5),
    30_000,
    'a huge attempt count cannot overflow',
  );
  assert.equal(
    fullJitterDelayMs(5, 1000, 60_000, () => 0),
    0,
    'full jitter reaches zero',
  );
});

test('tokenExpiryMs reads exp of a JWT without verifying it, and undefined for anything else', async () => {
  const token = await new SignJWT({ uid: 'ü' })
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(1_900_000_000)
    .sign(new TextEncoder().encode('x'.repeat(32)));
  assert.equal(tokenExpiryMs(token), 1_900_000_000_000);
  assert.equal(tokenExpiryMs('not-a-jwt'), undefined);
  assert.equal(tokenExpiryMs('a.!!!.c'), undefined);
  assert.equal(tokenExpiryMs(`a.${btoa('{"exp":"soon"}')}.c`), undefined);
  assert.equal(tokenExpiryMs(`a.${btoa('null')}.c`), undefined);
});

test('parseTraceparent accepts W3C traceparents and refuses malformed or all-zero ids', () => {
  assert.deepEqual(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'), {
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    spanId: '00f067aa0ba902b7',
    sampled: true,
  });
  assert.equal(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00')?.sampled, false);
  assert.equal(parseTraceparent(undefined), undefined);
  assert.equal(parseTraceparent('00-00000000000000000000000000000000-00f067aa0ba902b7-01'), undefined);
  assert.equal(parseTraceparent('ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'), undefined);
  assert.equal(parseTraceparent('00-XYZ-00f067aa0ba902b7-01'), undefined);
});
