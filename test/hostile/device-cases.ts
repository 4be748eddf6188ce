import { createHmac, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import pLimit from 'p-limit';
import { io } from 'socket.io-client';
import { AuthErrorCode, DeviceErrorAck, DeviceTokenClaims, type DeviceErrorCode } from '@pushline/protocol';
import {
  brief,
  deepArrayText,
  hang,
  OK,
  serverError,
  wrong,
  type HostileCase,
  type Verdict,
} from './harness.ts';
import { hashOf } from './http-cases.ts';
import { rawHttp } from './raw-http.ts';
import { RawSocket } from './raw-socket.ts';

/**
 * Hostile input on the public device port: handshake tokens, raw engine.io/socket.io packets,
 * device requests (subscribe, unsubscribe, send) with bad bodies, floods, and plain HTTP. The
 * codes docs/protocol.md fixes (handshake refusals §1.2, error acks §3–4) are asserted exactly;
 * every request with an ack id must get an ack, and `internal` counts as a server error.
 */

/** Defaults of docs/protocol.md §7. */
const MAX_FRAME_BYTES = 65_536;
const MAX_PAYLOAD_BYTES = 4096;
const MAX_JSON_DEPTH = 32;
const D2D_BURST = 20;

export interface DeviceContext {
  /** Device URLs of the connection servers. */
  readonly deviceUrls: readonly string[];
  readonly jwtSecret: string;
  readonly seed: number;
  readonly deadlineMs: number;
}

const b64 = (part: unknown): string =>
  Buffer.from(typeof part === 'string' ? part : JSON.stringify(part)).toString('base64url');

/** A compact JWS over any header and claims (objects, or raw text for malformed JSON), HMAC-signed. */
export function signToken(header: unknown, claims: unknown, secret: string, hash = 'sha256'): string {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${createHmac(hash, secret).update(input).digest('base64url')}`;
}

const nowS = () => Math.floor(Date.now() / 1000);
let serial = 0;
/** A device id nobody else in the run uses. */
const freshId = (label: string) => `hx-${label}-${++serial}-${randomBytes(3).toString('hex')}`;

type ConnectOutcome =
  | { kind: 'connected'; disconnect: () => void }
  | { kind: 'refused'; message: string }
  | { kind: 'closed'; reason: string }
  | { kind: 'hang' };

/** A real socket.io-client handshake with `auth`, bounded. */
function tryConnect(
  url: string,
  auth: Record<string, unknown> | undefined,
  deadlineMs: number,
): Promise<ConnectOutcome> {
  return new Promise((resolve) => {
    const socket = io(url, {
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      // Longer than our deadline: a timeout must show as a hang here, not as a client-side error.
      timeout: deadlineMs + 5_000,
      ...(auth === undefined ? {} : { auth }),
    });
    let done = false;
    const finish = (outcome: ConnectOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (outcome.kind !== 'connected') socket.disconnect();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish({ kind: 'hang' }), deadlineMs);
    socket.once('connect', () => finish({ kind: 'connected', disconnect: () => socket.disconnect() }));
    socket.once('connect_error', (err) => finish({ kind: 'refused', message: err.message }));
    socket.once('disconnect', (reason) => finish({ kind: 'closed', reason }));
  });
}

/** What a handshake must end in: one documented code, any documented refusal, or either that or acceptance. */
type TokenExpectation = { code: string } | 'refused' | 'either';

function judgeHandshake(outcome: ConnectOutcome, expect: TokenExpectation, deadlineMs: number): Verdict {
  switch (outcome.kind) {
    case 'hang':
      return hang(`handshake neither accepted nor refused within ${deadlineMs} ms`);
    case 'closed':
      return expect === 'either' ? OK : wrong(`closed (${outcome.reason}) without a connect_error code`);
    case 'connected':
      outcome.disconnect();
      return expect === 'either'
        ? OK
        : wrong(`token accepted; expected ${typeof expect === 'string' ? 'a refusal' : expect.code}`);
    case 'refused': {
      if (!AuthErrorCode.safeParse(outcome.message).success) {
        return wrong(`connect_error "${outcome.message}" is not a documented code`);
      }
      if (typeof expect === 'object' && outcome.message !== expect.code) {
        return wrong(`refused with ${outcome.message}; expected ${expect.code}`);
      }
      return OK;
    }
  }
}

/** What an ack must be: a documented error code, ok, or any documented answer. */
type AckExpectation = { code: DeviceErrorCode } | 'ok' | 'any';

function judgeAck(ack: unknown, expect: AckExpectation, deadlineMs: number): Verdict {
  if (ack === undefined) return hang(`no ack within ${deadlineMs} ms`);
  const error = DeviceErrorAck.safeParse(ack);
  if (error.success) {
    const { code } = error.data.error;
    if (code === 'internal') return serverError(`error ack internal: ${error.data.error.message}`);
    if (expect === 'ok') return wrong(`error ack ${code}; expected ok`);
    if (typeof expect === 'object' && code !== expect.code)
      return wrong(`error ack ${code}; expected ${expect.code}`);
    return OK;
  }
  if (typeof ack === 'object' && ack !== null && (ack as { ok?: unknown }).ok === true) {
    return typeof expect === 'object' ? wrong(`accepted ${brief(ack, 100)}; expected ${expect.code}`) : OK;
  }
  return wrong(`ack is neither ok nor a DeviceErrorAck: ${brief(ack, 100)}`);
}

export function deviceCases(ctx: DeviceContext): HostileCase[] {
  const cases: HostileCase[] = [];
  const { jwtSecret, deadlineMs } = ctx;
  const url = ctx.deviceUrls[0] as string;
  const otherUrl = (ctx.deviceUrls[1] ?? url) as string;
  const add = (name: string, run: () => Promise<Verdict>, item?: number) =>
    cases.push({ family: 'device', name, ...(item === undefined ? {} : { item }), run });
  const token = (
    claims: Record<string, unknown> = {},
    header: Record<string, unknown> = { alg: 'HS256', typ: 'JWT' },
  ) => signToken(header, { sub: freshId('tok'), uid: 'hx-user', exp: nowS() + 600, ...claims }, jwtSecret);

  // --- Handshake tokens (docs/protocol.md §1.2) ---------------------------------------------
  const tokenCases: [string, () => Record<string, unknown> | undefined, TokenExpectation, number?][] = [
    ['no auth', () => undefined, { code: 'token_missing' }],
    ['empty auth', () => ({}), { code: 'token_missing' }],
    ['empty token', () => ({ token: '' }), { code: 'token_missing' }],
    ['null token', () => ({ token: null }), { code: 'token_missing' }],
    ['number token', () => ({ token: 42 }), { code: 'token_malformed' }],
    ['object token', () => ({ token: { alg: 'none' } }), { code: 'token_malformed' }],
    ['array token', () => ({ token: [token()] }), { code: 'token_malformed' }],
    ['boolean token', () => ({ token: true }), { code: 'token_malformed' }],
    ['not a JWT', () => ({ token: 'hello' }), { code: 'token_malformed' }],
    ['two segments', () => ({ token: 'a.b' }), { code: 'token_malformed' }],
    ['three junk segments', () => ({ token: 'a.b.c' }), { code: 'token_malformed' }],
    ['four segments', () => ({ token: `${token()}.x` }), { code: 'token_malformed' }],
    [
      '8,193 characters',
      () => ({ token: `${token()}${'A'.repeat(8193)}`.slice(0, 8193) }),
      { code: 'token_malformed' },
    ],
    ['60 KB', () => ({ token: 'x'.repeat(60_000) }), { code: 'token_malformed' }],
    [
      'header not JSON',
      () => ({ token: signToken('{alg:HS256', { sub: 'a', uid: 'b', exp: nowS() + 60 }, jwtSecret) }),
      'refused',
    ],
    [
      'header is an array',
      () => ({ token: signToken(['HS256'], { sub: 'a', uid: 'b', exp: nowS() + 60 }, jwtSecret) }),
      { code: 'token_malformed' },
    ],
    [
      'claims are an array',
      () => ({ token: signToken({ alg: 'HS256' }, [1, 2], jwtSecret) }),
      { code: 'token_malformed' },
    ],
    ['claims not JSON', () => ({ token: signToken({ alg: 'HS256' }, '{"sub":', jwtSecret) }), 'refused'],
    ['crit header', () => ({ token: token({}, { alg: 'HS256', crit: ['b64'], b64: false }) }), 'refused'],
    [
      'wrong secret',
      () => ({
        token: signToken(
          { alg: 'HS256' },
          { sub: 'a', uid: 'b', exp: nowS() + 60 },
          'not-the-secret-0123456789abcdef',
        ),
      }),
      { code: 'token_invalid_signature' },
    ],
    [
      'signature of another token',
      () => ({ token: `${token().split('.').slice(0, 2).join('.')}.${token().split('.')[2]}` }),
      { code: 'token_invalid_signature' },
    ],
    ['empty signature', () => ({ token: `${token().split('.').slice(0, 2).join('.')}.` }), 'refused'],
    ['padded signature', () => ({ token: `${token()}=` }), 'refused'],
    [
      'alg none, no signature',
      () => ({ token: `${b64({ alg: 'none' })}.${b64({ sub: 'a', uid: 'b', exp: nowS() + 60 })}.` }),
      { code: 'token_invalid_signature' },
    ],
    ['alg None', () => ({ token: token({}, { alg: 'None' }) }), { code: 'token_invalid_signature' }],
    [
      'alg HS512',
      () => ({
        token: signToken({ alg: 'HS512' }, { sub: 'a', uid: 'b', exp: nowS() + 60 }, jwtSecret, 'sha512'),
      }),
      { code: 'token_invalid_signature' },
    ],
    [
      'alg RS256 header, HMAC signature',
      () => ({ token: token({}, { alg: 'RS256' }) }),
      { code: 'token_invalid_signature' },
    ],
    ['alg missing', () => ({ token: token({}, { typ: 'JWT' }) }), 'refused'],
    ['alg is a number', () => ({ token: token({}, { alg: 256 }) }), 'refused'],
    ['expired an hour ago', () => ({ token: token({ exp: nowS() - 3600 }) }), { code: 'token_expired' }],
    ['expired past the tolerance', () => ({ token: token({ exp: nowS() - 30 }) }), { code: 'token_expired' }],
    [
      'exp as a string',
      () => ({ token: token({ exp: String(nowS() + 600) }) }),
      { code: 'token_invalid_claims' },
    ],
    ['exp fractional', () => ({ token: token({ exp: nowS() + 600.5 }) }), { code: 'token_invalid_claims' }],
    [
      'exp missing',
      () => ({ token: signToken({ alg: 'HS256' }, { sub: 'a', uid: 'b' }, jwtSecret) }),
      { code: 'token_invalid_claims' },
    ],
    [
      'sub missing',
      () => ({ token: signToken({ alg: 'HS256' }, { uid: 'b', exp: nowS() + 60 }, jwtSecret) }),
      { code: 'token_invalid_claims' },
    ],
    [
      'uid missing',
      () => ({ token: signToken({ alg: 'HS256' }, { sub: freshId('u'), exp: nowS() + 60 }, jwtSecret) }),
      { code: 'token_invalid_claims' },
    ],
    ['sub with a space', () => ({ token: token({ sub: 'a b' }) }), { code: 'token_invalid_claims' }],
    [
      'sub 129 characters',
      () => ({ token: token({ sub: 's'.repeat(129) }) }),
      { code: 'token_invalid_claims' },
    ],
    ['sub a number', () => ({ token: token({ sub: 7 }) }), { code: 'token_invalid_claims' }],
    ['uid with a slash', () => ({ token: token({ uid: 'a/b' }) }), { code: 'token_invalid_claims' }],
    ['tid empty', () => ({ token: token({ tid: '' }) }), { code: 'token_invalid_claims' }],
    ['topics not an array', () => ({ token: token({ topics: 'news' }) }), { code: 'token_invalid_claims' }],
    [
      '257 topics',
      () => ({ token: token({ topics: Array.from({ length: 257 }, (_, i) => `t${i}`) }) }),
      { code: 'token_invalid_claims' },
    ],
    ['nbf in an hour', () => ({ token: token({ nbf: nowS() + 3600 }) }), { code: 'token_invalid_claims' }],
    ['iat a string', () => ({ token: token({ iat: 'yesterday' }) }), { code: 'token_invalid_claims' }],
    ['typ not JWT', () => ({ token: token({}, { alg: 'HS256', typ: 'not-a-jwt' }) }), 'refused', 19],
    ['unknown kid', () => ({ token: token({}, { alg: 'HS256', kid: 'no-such-key' }) }), 'either'],
    [
      'extra claim 3,000 deep',
      () => ({ token: token({ deep: JSON.parse(deepArrayText(3_000)) as unknown }) }),
      'either',
    ],
    [
      '__proto__ claim',
      () => ({
        token: signToken(
          { alg: 'HS256' },
          `{"sub":"${freshId('p')}","uid":"u","exp":${nowS() + 60},"__proto__":{"admin":true}}`,
          jwtSecret,
        ),
      }),
      'either',
    ],
    [
      'auth with 1,000 extra fields',
      () => ({ token: token(), ...Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`f${i}`, i])) }),
      'either',
    ],
  ];
  for (const [label, auth, expect, item] of tokenCases) {
    add(
      `token: ${label}`,
      async () => judgeHandshake(await tryConnect(url, auth(), deadlineMs), expect, deadlineMs),
      item,
    );
  }
  // Generated tokens: strings that look like JWTs but are not signed by us are always refused.
  const tokenArb = fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.stringMatching(/^[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,80}\.[A-Za-z0-9_-]{0,43}$/),
    fc
      .tuple(fc.jsonValue({ maxDepth: 3 }), fc.jsonValue({ maxDepth: 3 }))
      .map(([h, c]) => `${b64(h)}.${b64(c)}.${b64('sig')}`),
  );
  fc.sample(tokenArb, { seed: ctx.seed + hashOf('tokens'), numRuns: 25 }).forEach((t, i) => {
    add(`token: generated #${i} ${brief(t, 40)}`, async () =>
      judgeHandshake(
        await tryConnect(url, { token: t }, deadlineMs),
        t === '' ? { code: 'token_missing' } : 'refused',
        deadlineMs,
      ),
    );
  });
  // Generated claims, correctly signed: accepted only when they are valid claims.
  const claimValue = fc.oneof(
    fc.stringMatching(/^[A-Za-z0-9._:@-]{1,20}$/),
    fc.string({ maxLength: 20 }),
    fc.integer(),
    fc.constantFrom(null, true, '', 'x'.repeat(129), nowS() + 600, nowS() - 600),
  );
  const claimsArb = fc.record(
    {
      sub: claimValue,
      uid: claimValue,
      tid: claimValue,
      exp: fc.oneof(claimValue, fc.constant(nowS() + 600)),
      topics: fc.array(claimValue, { maxLength: 3 }),
    },
    { requiredKeys: [] },
  );
  fc.sample(claimsArb, { seed: ctx.seed + hashOf('claims'), numRuns: 25 }).forEach((claims, i) => {
    add(`token: generated claims #${i} ${brief(claims, 60)}`, async () => {
      const outcome = await tryConnect(
        url,
        { token: signToken({ alg: 'HS256', typ: 'JWT' }, claims, jwtSecret) },
        deadlineMs,
      );
      const valid = DeviceTokenClaims.safeParse(claims);
      if (outcome.kind === 'connected' && !(valid.success && valid.data.exp > nowS() - 5)) {
        outcome.disconnect();
        return wrong('invalid claims were accepted');
      }
      return judgeHandshake(outcome, 'either', deadlineMs);
    });
  });

  // --- Raw packets before authenticating -----------------------------------------------------
  /**
   * Sends `frames` on a fresh engine.io connection, then proves the server reached a defined state:
   * it closed the connection, or it still takes a valid CONNECT. `connectAnswer` checks the
   * CONNECT_ERROR of frames that are themselves a CONNECT.
   */
  const rawFrames = (
    label: string,
    frames: (string | Buffer)[],
    options: { expectClose?: boolean; connectError?: string; item?: number } = {},
  ) =>
    add(
      `raw: ${label}`,
      async () => {
        const raw = await RawSocket.open(url, { deadlineMs });
        if (!(raw instanceof RawSocket))
          return raw.status && raw.status >= 500
            ? serverError(raw.failed)
            : hang(`could not open: ${raw.failed}`);
        try {
          for (const f of frames) raw.send(f);
          if (options.connectError) {
            const answer = await raw.next((f) => /^4[04]\{/.test(f), deadlineMs);
            if (answer === undefined)
              return raw.isClosed ? wrong('closed without CONNECT_ERROR') : hang('no answer to CONNECT');
            if (!answer.startsWith(`44{"message":"${options.connectError}"`))
              return wrong(`answered ${brief(answer, 80)}; expected ${options.connectError}`);
            return OK;
          }
          if (options.expectClose) {
            const closed = await raw.closedWithin(deadlineMs);
            return closed ? OK : hang(`not closed within ${deadlineMs} ms`);
          }
          // A frame that was itself a CONNECT of the main namespace gets its own answer first.
          for (const f of frames) {
            if (typeof f === 'string' && f.startsWith('40') && !f.startsWith('40/')) {
              if ((await raw.next((a) => /^4[04]\{/.test(a), deadlineMs)) === undefined && !raw.isClosed) {
                return hang('no answer to a CONNECT');
              }
            }
          }
          const answer = await raw.connect(JSON.stringify({ token: token() }), deadlineMs);
          if (answer === undefined) return raw.isClosed ? OK : hang('neither closed nor answering CONNECT');
          return answer.ok ? OK : wrong(`valid CONNECT refused after the frames: ${answer.message}`);
        } finally {
          raw.close();
        }
      },
      options.item,
    );
  const attachment = (json: string) => `451-${json}`;
  const rawTable: [string, (string | Buffer)[], { expectClose?: boolean; connectError?: string }?][] = [
    ['empty text frame', ['']],
    ['unknown engine.io type', ['9']],
    ['engine.io open from client', ['0{"sid":"x"}']],
    ['engine.io close', ['1']],
    ['engine.io ping', ['2']],
    ['engine.io pong', ['3']],
    ['engine.io upgrade', ['5']],
    ['engine.io noop', ['6']],
    ['message without socket.io type', ['4']],
    ['unknown socket.io type', ['49']],
    ['CONNECT without auth', ['40'], { connectError: 'token_missing' }],
    ['CONNECT with {}', ['40{}'], { connectError: 'token_missing' }],
    ['CONNECT with numeric token', ['40{"token":1}'], { connectError: 'token_malformed' }],
    ['CONNECT with array auth', ['40[]']],
    ['CONNECT with string auth', ['40"token"']],
    ['CONNECT with null auth', ['40null']],
    ['CONNECT with broken JSON', ['40{"token":']],
    ['CONNECT to unknown namespace', ['40/admin,{}']],
    [
      'CONNECT with 20,000-deep token',
      [`40{"token":${deepArrayText(20_000)}}`],
      { connectError: 'token_malformed' },
    ],
    ['DISCONNECT before CONNECT', ['41']],
    ['EVENT before CONNECT', ['42["send",{"to":"x","payload":1}]']],
    ['EVENT with ack before CONNECT', ['421["subscribe",{"topic":"x"}]']],
    ['ACK before CONNECT', ['431[{"ok":true}]']],
    ['CONNECT_ERROR from client', ['44{"message":"x"}']],
    ['BINARY_EVENT never completed', [attachment('["send",{"_placeholder":true,"num":0}]')]],
    [
      'BINARY_EVENT with a bad placeholder',
      [attachment('["send",{"_placeholder":true,"num":99}]'), Buffer.from([1, 2, 3])],
    ],
    ['binary frame alone', [Buffer.from([0x00, 0xff, 0x10, 0x80])]],
    ['empty binary frame', [Buffer.alloc(0)]],
    ['NUL bytes', ['4\u0000\u0000']],
    ['frame one byte over the limit', ['4' + 'x'.repeat(MAX_FRAME_BYTES)], { expectClose: true }],
    ['1 MB frame', ['4' + 'x'.repeat(1_048_576)], { expectClose: true }],
    ['200 noop frames', Array.from({ length: 200 }, () => '6')],
  ];
  for (const [label, frames, options] of rawTable) rawFrames(label, frames, options);
  const frameArb = fc.oneof(
    fc.string({ maxLength: 60 }),
    fc
      .tuple(
        fc.constantFrom('4', '40', '42', '43', '45', '451-', '0', '2', '6'),
        fc.jsonValue({ maxDepth: 3 }),
      )
      .map(([p, v]) => `${p}${JSON.stringify(v)}`),
    fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
  );
  fc.sample(frameArb, { seed: ctx.seed + hashOf('frames'), numRuns: 25 }).forEach((frame, i) =>
    rawFrames(`generated frame #${i} ${brief(frame, 40)}`, [frame]),
  );
  // Invalid UTF-8 in a text frame: the WebSocket layer must close (1007), nothing else.
  add('raw: text frame with invalid UTF-8', async () => {
    const raw = await RawSocket.open(url, { deadlineMs });
    if (!(raw instanceof RawSocket)) return hang(`could not open: ${raw.failed}`);
    try {
      raw.send(Buffer.from([0x34, 0x32, 0xc3, 0x28, 0xff]), { binary: false });
      const closed = await raw.closedWithin(deadlineMs);
      return closed ? OK : hang('not closed after invalid UTF-8');
    } finally {
      raw.close();
    }
  });

  // --- Requests of an authenticated device, as raw packets ---------------------------------
  /**
   * Connects a raw device (uid `uid`), sends one EVENT text, and judges its ack. Without an ack id
   * (`ackId` null) no ack is owed: the device must still get one for a valid request after it.
   */
  const authed = async <T>(
    uid: string,
    work: (raw: RawSocket, deviceId: string) => Promise<T>,
    claims: Record<string, unknown> = {},
  ): Promise<T | Verdict> => {
    const raw = await RawSocket.open(url, { deadlineMs });
    if (!(raw instanceof RawSocket)) return hang(`could not open: ${raw.failed}`);
    const deviceId = freshId('dev');
    try {
      const answer = await raw.connect(
        JSON.stringify({ token: token({ sub: deviceId, uid, ...claims }) }),
        deadlineMs,
      );
      if (!answer?.ok) return hang(`valid device not accepted: ${answer ? answer.message : 'no answer'}`);
      return await work(raw, deviceId);
    } finally {
      raw.close();
    }
  };
  /** After a request that owes no ack: a valid subscribe must still be answered. */
  const stillServes = async (raw: RawSocket, uid: string): Promise<Verdict> => {
    if (raw.isClosed) return OK;
    const ack = await raw.request(JSON.stringify(['subscribe', { topic: `user:${uid}` }]), 9_999, deadlineMs);
    if (ack === undefined && raw.isClosed) return OK;
    return judgeAck(ack, 'ok', deadlineMs);
  };
  const request = (
    label: string,
    argsText: (deviceId: string, uid: string) => string,
    expect: AckExpectation,
    item?: number,
    claims?: Record<string, unknown>,
  ) =>
    add(
      `request: ${label}`,
      async () => {
        const uid = freshId('uid');
        const verdict = await authed(
          uid,
          async (raw, deviceId) =>
            judgeAck(await raw.request(argsText(deviceId, uid), 1, deadlineMs), expect, deadlineMs),
          claims,
        );
        return verdict;
      },
      item,
    );
  const noAck = (label: string, text: (uid: string) => string, item?: number) =>
    add(
      `request: ${label}`,
      async () => {
        const uid = freshId('uid');
        return authed(uid, async (raw) => {
          raw.send(text(uid));
          return stillServes(raw, uid);
        });
      },
      item,
    );

  const ev = (...args: unknown[]) => JSON.stringify(args);
  // Item 14: every request with an ack id gets an ack; a malformed one `invalid_request`.
  for (const event of ['subscribe', 'unsubscribe', 'send']) {
    request(`${event} with no body`, () => ev(event), { code: 'invalid_request' }, 14);
    request(
      `${event} with a body and two extra arguments`,
      (_d, uid) => ev(event, { topic: `user:${uid}`, to: 'x', payload: 1 }, 'extra', 2),
      'any',
      14,
    );
    for (const [label, body] of [
      ['null', null],
      ['a number', 7],
      ['a string', 'x'],
      ['an array', [1]],
      ['{}', {}],
    ] as const) {
      request(`${event} with ${label}`, () => ev(event, body), { code: 'invalid_request' });
    }
    noAck(
      `${event} without an ack id`,
      (uid) => `42${ev(event, { topic: `user:${uid}`, to: 'hx-nobody', payload: 1 })}`,
    );
    request(
      `${event} with a 20,000-deep body`,
      () => `["${event}",${deepArrayText(20_000)}]`,
      { code: 'invalid_request' },
      11,
    );
  }
  noAck('unknown event with an ack id', () => '421["reboot",{}]');
  noAck('server-side event name', () => '421["message",{"id":"x","payload":1,"sentAt":1}]');
  noAck('reconnect_hint from the device', () => '42["reconnect_hint",{"reason":"replaced","afterMs":0}]');
  noAck('huge ack id', (uid) => `4299999999999999999999${ev('subscribe', { topic: `user:${uid}` })}`);
  noAck('negative ack id', (uid) => `42-1${ev('subscribe', { topic: `user:${uid}` })}`);
  noAck('EVENT with no arguments', () => '421[]');
  noAck('EVENT whose name is a number', () => '421[1,{}]');
  noAck('EVENT that is an object', () => '421{"event":"subscribe"}');
  noAck('EVENT with broken JSON', () => '421["subscribe",');
  noAck('ACK for nothing', () => '4377[{"ok":true}]');
  noAck('a second CONNECT', () => `40${JSON.stringify({ token: token() })}`);
  add('request: BINARY_EVENT send with a binary payload', async () => {
    const uid = freshId('uid');
    return authed(uid, async (raw) => {
      raw.send('451-1["send",{"to":"hx-nobody","payload":{"_placeholder":true,"num":0}}]');
      raw.send(Buffer.from([1, 2, 3, 4]));
      const ack = await raw.next((f) => f.startsWith('431['), deadlineMs);
      if (ack === undefined) return raw.isClosed ? OK : hang('no ack');
      return judgeAck((JSON.parse(ack.slice(3)) as unknown[])[0], { code: 'invalid_request' }, deadlineMs);
    });
  });

  // Topics (docs/protocol.md §3).
  const topicTable: [string, (uid: string) => unknown, AckExpectation, number?][] = [
    ['own user topic', (uid) => `user:${uid}`, 'ok'],
    // Whether `user:<uid>.x` stays the user's own space depends on the fix of issue item 1.
    ['own user subtopic', (uid) => `user:${uid}.inbox`, 'any'],
    ['own topic with a suffix', (uid) => `user:${uid}x`, { code: 'forbidden' }],
    ['another user', () => 'user:hx-someone-else', { code: 'forbidden' }],
    ['user: prefix only', () => 'user:', { code: 'forbidden' }],
    ['empty', () => '', { code: 'invalid_request' }],
    ['129 characters', () => `t${'x'.repeat(128)}`, { code: 'invalid_request' }],
    ['with a space', () => 'news flash', { code: 'invalid_request' }],
    ['with a slash', () => 'news/flash', { code: 'invalid_request' }],
    ['star', () => '*', { code: 'invalid_request' }],
    ['unicode', () => 'nouvelles-é', { code: 'invalid_request' }],
    ['number', () => 42, { code: 'invalid_request' }],
    ['object', () => ({ name: 'news' }), { code: 'invalid_request' }],
    ['__proto__', () => '__proto__', { code: 'forbidden' }],
    ['constructor', () => 'constructor', { code: 'forbidden' }],
    ['room name of the socket', () => 'topic:news', { code: 'forbidden' }],
    ['topic not in the claim', () => 'news', { code: 'forbidden' }],
  ];
  for (const [label, topic, expect, item] of topicTable) {
    request(`subscribe ${label}`, (_d, uid) => ev('subscribe', { topic: topic(uid) }), expect, item);
    request(
      `unsubscribe ${label}`,
      (_d, uid) => ev('unsubscribe', { topic: topic(uid) }),
      typeof expect === 'object' && expect.code === 'invalid_request' ? expect : 'ok',
    );
  }
  request('subscribe by claim prefix', () => ev('subscribe', { topic: 'news.sport' }), 'ok', undefined, {
    topics: ['news.*'],
  });
  request(
    'subscribe outside the claim prefix',
    () => ev('subscribe', { topic: 'newsletter' }),
    { code: 'forbidden' },
    undefined,
    { topics: ['news.*'] },
  );
  request('subscribe with a star claim', () => ev('subscribe', { topic: 'anything' }), 'ok', undefined, {
    topics: ['*'],
  });
  // Item 1: no uid reaches another uid's topics, whatever the ids hold (fast-check over ids).
  const idPart = fc.stringMatching(/^[A-Za-z0-9_:@-][A-Za-z0-9._:@-]{0,30}$/);
  fc.sample(fc.tuple(idPart, idPart), { seed: ctx.seed + hashOf('uids'), numRuns: 15 }).forEach(
    ([owner, suffix], i) => {
      const victim = `${owner}.${suffix}`;
      add(
        `request: uid ${brief(owner, 20)} subscribes user:${brief(victim, 40)} (generated #${i})`,
        async () =>
          authed(owner, async (raw) =>
            judgeAck(
              await raw.request(ev('subscribe', { topic: `user:${victim}` }), 1, deadlineMs),
              { code: 'forbidden' },
              deadlineMs,
            ),
          ),
        1,
      );
    },
  );
  fc.sample(fc.string({ maxLength: 140 }), { seed: ctx.seed + hashOf('topics'), numRuns: 20 }).forEach(
    (topic, i) => {
      request(`subscribe generated topic #${i} ${brief(topic, 30)}`, () => ev('subscribe', { topic }), 'any');
    },
  );

  // Device-to-device `send` (docs/protocol.md §4).
  const sendTable: [string, (uid: string) => Record<string, unknown> | string, AckExpectation, number?][] = [
    ['to nobody', () => ({ to: 'hx-nobody', payload: 1, timeoutMs: 200 }), 'ok'],
    ["to another user's device", () => ({ to: 'hx-other-device', payload: 1 }), 'ok'],
    ['to missing', () => ({ payload: 1 }), { code: 'invalid_request' }],
    ['to empty', () => ({ to: '', payload: 1 }), { code: 'invalid_request' }],
    ['to 129 characters', () => ({ to: 'd'.repeat(129), payload: 1 }), { code: 'invalid_request' }],
    ['to with a space', () => ({ to: 'a b', payload: 1 }), { code: 'invalid_request' }],
    ['to a number', () => ({ to: 5, payload: 1 }), { code: 'invalid_request' }],
    ['to an array', () => ({ to: ['a', 'b'], payload: 1 }), { code: 'invalid_request' }],
    ['payload missing', () => ({ to: 'hx-nobody' }), { code: 'invalid_request' }],
    ['payload null', () => ({ to: 'hx-nobody', payload: null, timeoutMs: 200 }), 'ok'],
    [
      'payload one byte over',
      () => ({ to: 'hx-nobody', payload: 'x'.repeat(MAX_PAYLOAD_BYTES - 1) }),
      { code: 'payload_too_large' },
    ],
    [
      'payload 60 KB',
      () => ({ to: 'hx-nobody', payload: 'x'.repeat(60_000) }),
      { code: 'payload_too_large' },
    ],
    [
      'payload at the limit',
      () => ({ to: 'hx-nobody', payload: 'x'.repeat(MAX_PAYLOAD_BYTES - 2), timeoutMs: 200 }),
      'ok',
    ],
    [
      // Within the limit even when the frame's own array and object count.
      `payload ${MAX_JSON_DEPTH - 4} deep`,
      () => `{"to":"hx-nobody","timeoutMs":200,"payload":${deepArrayText(MAX_JSON_DEPTH - 4)}}`,
      'ok',
    ],
    [
      `payload ${MAX_JSON_DEPTH + 1} deep`,
      () => `{"to":"hx-nobody","payload":${deepArrayText(MAX_JSON_DEPTH + 1)}}`,
      { code: 'invalid_request' },
      11,
    ],
    [
      'payload 300 deep',
      () => `{"to":"hx-nobody","payload":${deepArrayText(300)}}`,
      { code: 'invalid_request' },
      11,
    ],
    [
      'payload 2,000 deep',
      () => `{"to":"hx-nobody","payload":${deepArrayText(2_000)}}`,
      { code: 'invalid_request' },
      11,
    ],
    [
      'payload 20,000 deep',
      () => `{"to":"hx-nobody","payload":${deepArrayText(20_000)}}`,
      { code: 'invalid_request' },
      11,
    ],
    [
      'payload 2,000 objects deep',
      () => `{"to":"hx-nobody","payload":${'{"a":'.repeat(2_000)}1${'}'.repeat(2_000)}}`,
      { code: 'invalid_request' },
      11,
    ],
    ['timeoutMs 0', () => ({ to: 'hx-nobody', payload: 1, timeoutMs: 0 }), { code: 'invalid_request' }],
    ['timeoutMs -1', () => ({ to: 'hx-nobody', payload: 1, timeoutMs: -1 }), { code: 'invalid_request' }],
    ['timeoutMs 1.5', () => ({ to: 'hx-nobody', payload: 1, timeoutMs: 1.5 }), { code: 'invalid_request' }],
    [
      'timeoutMs a string',
      () => ({ to: 'hx-nobody', payload: 1, timeoutMs: '100' }),
      { code: 'invalid_request' },
    ],
    ['timeoutMs null', () => ({ to: 'hx-nobody', payload: 1, timeoutMs: null }), { code: 'invalid_request' }],
    [
      'timeoutMs 1e308',
      () => ({ to: 'hx-nobody', payload: 1, timeoutMs: 1e308 }),
      { code: 'invalid_request' },
    ],
    [
      'timeoutMs 30,001',
      () => ({ to: 'hx-nobody', payload: 1, timeoutMs: 30_001 }),
      { code: 'invalid_request' },
    ],
    [
      'timeoutMs 120,001',
      () => ({ to: 'hx-nobody', payload: 1, timeoutMs: 120_001 }),
      { code: 'invalid_request' },
    ],
    ['id empty', () => ({ to: 'hx-nobody', payload: 1, id: '' }), { code: 'invalid_request' }],
    ['id with @', () => ({ to: 'hx-nobody', payload: 1, id: 'a@b' }), { code: 'invalid_request' }],
    [
      'id 129 characters',
      () => ({ to: 'hx-nobody', payload: 1, id: 'i'.repeat(129) }),
      { code: 'invalid_request' },
    ],
    ['id a number', () => ({ to: 'hx-nobody', payload: 1, id: 12 }), { code: 'invalid_request' }],
    ['unknown field', () => ({ to: 'hx-nobody', payload: 1, timeoutMs: 200, priority: 'high' }), 'any'],
    ['__proto__ field', () => `{"to":"hx-nobody","payload":1,"timeoutMs":200,"__proto__":{"to":"x"}}`, 'any'],
  ];
  for (const [label, body, expect, item] of sendTable) {
    request(
      `send ${label}`,
      (_d, uid) => {
        const b = body(uid);
        return typeof b === 'string' ? `["send",${b}]` : ev('send', b);
      },
      expect,
      item,
    );
  }
  request('send to itself', (deviceId) => ev('send', { to: deviceId, payload: 1, timeoutMs: 200 }), 'ok');
  const sendArb = fc.record(
    {
      to: fc.oneof(fc.stringMatching(/^[A-Za-z0-9._:@-]{1,20}$/), fc.string({ maxLength: 20 }), fc.integer()),
      payload: fc.jsonValue({ maxDepth: 4 }),
      id: fc.oneof(fc.stringMatching(/^[A-Za-z0-9._:-]{1,20}$/), fc.string({ maxLength: 10 })),
      timeoutMs: fc.oneof(
        fc.integer({ min: -10, max: 300 }),
        fc.integer({ min: 30_000, max: 200_000 }),
        fc.double(),
      ),
    },
    { requiredKeys: [] },
  );
  fc.sample(sendArb, { seed: ctx.seed + hashOf('sends'), numRuns: 25 }).forEach((body, i) =>
    request(`send generated #${i} ${brief(body, 50)}`, () => ev('send', body), 'any'),
  );

  // --- Floods ----------------------------------------------------------------------------------
  add('flood: 60 sends at once (documented rate limit)', async () => {
    const uid = freshId('uid');
    return authed(uid, async (raw) => {
      const acks = await Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          raw.request(ev('send', { to: 'hx-nobody', payload: i, timeoutMs: 200 }), 100 + i, deadlineMs),
        ),
      );
      for (const ack of acks) {
        const v = judgeAck(ack, 'any', deadlineMs);
        if (v.kind !== 'ok') return v;
      }
      const limited = acks.filter(
        (a) => DeviceErrorAck.safeParse(a).data?.error.code === 'rate_limited',
      ).length;
      // Burst 20 (plus what refills while the burst is read) pass; the rest is rate_limited.
      return limited >= 60 - D2D_BURST - 10 ? OK : wrong(`only ${limited} of 60 sends were rate_limited`);
    });
  });
  add(
    'flood: 300 subscribe/unsubscribe at once (issue item 8: rate-limited like sends)',
    async () => {
      const uid = freshId('uid');
      return authed(uid, async (raw) => {
        const acks = await Promise.all(
          Array.from({ length: 300 }, (_, i) =>
            raw.request(
              ev(i % 2 === 0 ? 'subscribe' : 'unsubscribe', { topic: `user:${uid}` }),
              1000 + i,
              deadlineMs,
            ),
          ),
        );
        for (const ack of acks) {
          const v = judgeAck(ack, 'any', deadlineMs);
          if (v.kind !== 'ok') return v;
        }
        const limited = acks.filter(
          (a) => DeviceErrorAck.safeParse(a).data?.error.code === 'rate_limited',
        ).length;
        return limited > 0 ? OK : wrong('300 subscribe/unsubscribe requests in one burst, none rate_limited');
      });
    },
    8,
  );
  add('flood: 2,000 noop frames then a request', async () => {
    const uid = freshId('uid');
    return authed(uid, async (raw) => {
      for (let i = 0; i < 2000; i++) raw.send('6');
      return stillServes(raw, uid);
    });
  });
  add('flood: frame over the limit on an authenticated connection closes it', async () => {
    const uid = freshId('uid');
    return authed(uid, async (raw) => {
      raw.send(`42${ev('send', { to: 'hx-nobody', payload: 'x'.repeat(MAX_FRAME_BYTES) })}`);
      const closed = await raw.closedWithin(deadlineMs);
      return closed ? OK : hang('a frame over PUSHLINE_MAX_FRAME_BYTES did not close the connection');
    });
  });
  add('flood: 100 devices connect and drop at once', async () => {
    const outcomes = await Promise.all(
      Array.from({ length: 100 }, () => tryConnect(url, { token: token() }, deadlineMs * 2)),
    );
    let connected = 0;
    for (const o of outcomes) {
      if (o.kind === 'connected') {
        connected++;
        o.disconnect();
      } else if (o.kind === 'hang') return hang('a device got no handshake answer');
    }
    return connected === 100 ? OK : wrong(`${100 - connected} of 100 valid devices were refused`);
  });

  // --- Plain HTTP on the device port ----------------------------------------------------------
  const upgrade = (extra: [string, string][] = []): [string, string][] => [
    ['upgrade', 'websocket'],
    ['connection', 'Upgrade'],
    ['sec-websocket-key', 'dGhlIHNhbXBsZSBub25jZQ=='],
    ['sec-websocket-version', '13'],
    ...extra,
  ];
  const deviceHttp: [string, string, string, [string, string][], number?][] = [
    ['GET /', 'GET', '/', [], 6],
    ['GET /healthz', 'GET', '/healthz', [], 6],
    ['GET /metrics', 'GET', '/metrics', [], 6],
    ['POST /', 'POST', '/', [['content-length', '0']], 6],
    ['GET /favicon.ico', 'GET', '/favicon.ico', [], 6],
    ['GET /socket.io.js', 'GET', '/socket.io/socket.io.js', []],
    ['GET /socket.io/ without a query', 'GET', '/socket.io/', []],
    ['polling (not allowed)', 'GET', '/socket.io/?EIO=4&transport=polling', []],
    ['websocket transport without upgrade', 'GET', '/socket.io/?EIO=4&transport=websocket', []],
    ['unknown session id', 'GET', '/socket.io/?EIO=4&transport=websocket&sid=nope', upgrade()],
    ['EIO=3 upgrade', 'GET', '/socket.io/?EIO=3&transport=websocket', upgrade(), 13],
    // engine.io reads any EIO other than 4 as 3: the same defect as EIO=3.
    ['EIO=5 upgrade', 'GET', '/socket.io/?EIO=5&transport=websocket', upgrade(), 13],
    ['EIO=abc upgrade', 'GET', '/socket.io/?EIO=abc&transport=websocket', upgrade(), 13],
    ['upgrade without EIO', 'GET', '/socket.io/?transport=websocket', upgrade(), 13],
    [
      'upgrade with a bad key',
      'GET',
      '/socket.io/?EIO=4&transport=websocket',
      [
        ['upgrade', 'websocket'],
        ['connection', 'Upgrade'],
        ['sec-websocket-key', 'short'],
        ['sec-websocket-version', '13'],
      ],
    ],
    [
      'upgrade with version 7',
      'GET',
      '/socket.io/?EIO=4&transport=websocket',
      [
        ['upgrade', 'websocket'],
        ['connection', 'Upgrade'],
        ['sec-websocket-key', 'dGhlIHNhbXBsZSBub25jZQ=='],
        ['sec-websocket-version', '7'],
      ],
    ],
    [
      'upgrade to h2c',
      'GET',
      '/socket.io/?EIO=4&transport=websocket',
      [
        ['upgrade', 'h2c'],
        ['connection', 'Upgrade'],
      ],
    ],
    ['upgrade on another path', 'GET', '/other', upgrade(), 6],
    ['bad percent-encoding in the query', 'GET', '/socket.io/?EIO=%&transport=%ZZ', []],
  ];
  for (const [label, method, path, headers, item] of deviceHttp) {
    add(
      `device port HTTP: ${label}`,
      async () => {
        const result = await rawHttp(url, { method, path, headers, deadlineMs });
        if (result.kind === 'hang') return hang(`no HTTP answer within ${deadlineMs} ms`);
        if (result.kind === 'closed')
          return wrong(`closed without an HTTP answer (${result.error ?? 'end'})`);
        const { status } = result.response;
        if (status >= 500) return serverError(`${status}`);
        if (status < 400) return wrong(`answered ${status}; expected a 4xx`);
        return OK;
      },
      item,
    );
  }

  // --- The other server: d2d across servers with a bad payload ----------------------------------
  add(
    'request: cross-server send with a deep payload',
    async () => {
      const raw = await RawSocket.open(otherUrl, { deadlineMs });
      if (!(raw instanceof RawSocket)) return hang(raw.failed);
      try {
        const answer = await raw.connect(JSON.stringify({ token: token() }), deadlineMs);
        if (!answer?.ok) return hang('not accepted');
        return judgeAck(
          await raw.request(`["send",{"to":"hx-nobody","payload":${deepArrayText(1_000)}}]`, 1, deadlineMs),
          { code: 'invalid_request' },
          deadlineMs,
        );
      } finally {
        raw.close();
      }
    },
    11,
  );

  return cases;
}

/**
 * Issue item 5: raw WebSockets that never send CONNECT, from another address (127.0.0.2), must
 * not keep a real device (127.0.0.1) out. Opens `count` of them, `concurrency` at a time, holds
 * them, and connects a real socket.io-client device meanwhile.
 */
export function handshakeFloodCase(ctx: DeviceContext, count = 4_100, concurrency = 200): HostileCase {
  const url = ctx.deviceUrls[0] as string;
  return {
    family: 'device',
    name: `flood: ${count} raw WebSockets from 127.0.0.2 that never CONNECT, then a real device`,
    item: 5,
    run: async () => {
      const held: RawSocket[] = [];
      let refused = 0;
      try {
        const limit = pLimit(concurrency);
        await Promise.all(
          Array.from({ length: count }, () =>
            limit(async () => {
              const raw = await RawSocket.open(url, {
                localAddress: '127.0.0.2',
                deadlineMs: ctx.deadlineMs,
              });
              if (raw instanceof RawSocket) held.push(raw);
              else refused++;
            }),
          ),
        );
        const open = held.filter((r) => !r.isClosed).length;
        const device = await tryConnect(
          url,
          {
            token: signToken(
              { alg: 'HS256' },
              { sub: freshId('flood'), uid: 'hx-flood', exp: nowS() + 600 },
              ctx.jwtSecret,
            ),
          },
          ctx.deadlineMs,
        );
        const context = `${open} raw sockets open, ${refused} refused`;
        if (device.kind === 'connected') {
          device.disconnect();
          return OK;
        }
        if (device.kind === 'hang') return hang(`real device got no answer (${context})`);
        return wrong(
          `real device refused: ${device.kind === 'refused' ? device.message : device.reason} (${context})`,
        );
      } finally {
        for (const r of held) r.close();
      }
    },
  };
}
