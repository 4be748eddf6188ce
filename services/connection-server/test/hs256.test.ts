import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { decodeProtectedHeader, errors, jwtVerify, SignJWT, type JWTHeaderParameters } from 'jose';
import { hs256Verifier, type Hs256VerifierOptions } from '../src/hs256.ts';
import { AuthError, toAuthError } from '../src/auth.ts';

const secret = 'k'.repeat(40);
const key1 = '1'.repeat(40);
const key2 = '2'.repeat(40);
const rotation: Partial<Hs256VerifierOptions> = {
  keys: new Map([
    ['k1', key1],
    ['k2', key2],
  ]),
};
const now = () => Math.floor(Date.now() / 1000);

/** A compact JWS over any header and claims text, signed with `key` (HS256). */
function forge(header: unknown, claims: unknown, key = secret): string {
  const encode = (part: unknown) =>
    Buffer.from(typeof part === 'string' ? part : JSON.stringify(part)).toString('base64url');
  const input = `${encode(header)}.${encode(claims)}`;
  return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
}

function sign(claims: Record<string, unknown>, key = secret): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(key));
}

/** What our verifier and jose's jwtVerify (with the server's options) make of a token: 'ok' or the code. */
async function verdicts(token: string, options: Partial<Hs256VerifierOptions> = {}) {
  const o: Hs256VerifierOptions = { secret, clockToleranceS: 5, ...options };
  let ours: string;
  try {
    hs256Verifier(o)(token);
    ours = 'ok';
  } catch (err) {
    assert.ok(err instanceof AuthError, String(err));
    ours = err.code;
  }
  let theirs: string;
  // The server's rules as jose options: a key resolver by `kid` when a key set is given (an unknown
  // kid is jose's "no matching key"), and the `typ` check when the header has one.
  const encode = (secret: string) => new TextEncoder().encode(secret);
  const keySet = o.keys ?? new Map<string, string>();
  const resolveKey = (header: JWTHeaderParameters) => {
    const secretOf =
      keySet.size > 0 && header.kid !== undefined ? keySet.get(header.kid as unknown as string) : o.secret;
    if (secretOf === undefined) throw new errors.JWKSNoMatchingKey();
    return encode(secretOf);
  };
  let typ: string | undefined;
  try {
    typ = decodeProtectedHeader(token).typ === undefined ? undefined : 'JWT';
  } catch {
    typ = undefined;
  }
  try {
    await jwtVerify(token, resolveKey, {
      algorithms: ['HS256'],
      clockTolerance: o.clockToleranceS,
      requiredClaims: ['exp', 'sub'],
      ...(o.issuer === undefined ? {} : { issuer: o.issuer }),
      ...(o.audience === undefined ? {} : { audience: o.audience }),
      ...(typ === undefined ? {} : { typ }),
    });
    theirs = 'ok';
  } catch (err) {
    theirs = toAuthError(err).code;
  }
  return { ours, theirs };
}

// The table reaches every line and branch of hs256.ts (check with
// `node --experimental-test-coverage --test-coverage-include='**/hs256.ts' --test <this file>`):
// a new check there needs a case here that jose agrees with.
describe('HS256 device token verification', () => {
  const base = () => ({ sub: 'dev-1', uid: 'u-1', exp: now() + 300 });
  const cases: [string, () => Promise<string> | string, string, Partial<Hs256VerifierOptions>?][] = [
    ['a valid token', () => sign(base()), 'ok'],
    ['iat and nbf in the past', () => sign({ ...base(), iat: now() - 10, nbf: now() - 10 }), 'ok'],
    ['typ and kid headers', () => forge({ alg: 'HS256', typ: 'JWT', kid: 'k1' }, base()), 'ok'],
    ['another key', () => sign(base(), 'z'.repeat(40)), 'token_invalid_signature'],
    ['expired', () => sign({ ...base(), exp: now() - 3600 }), 'token_expired'],
    ['expired within the clock tolerance', () => sign({ ...base(), exp: now() - 2 }), 'ok'],
    ['expired by exactly the tolerance', () => sign({ ...base(), exp: now() - 5 }), 'token_expired'],
    ['not valid before a future time', () => sign({ ...base(), nbf: now() + 60 }), 'token_invalid_claims'],
    ['nbf within the clock tolerance', () => sign({ ...base(), nbf: now() + 3 }), 'ok'],
    ['no exp', () => sign({ sub: 'dev-1' }), 'token_invalid_claims'],
    ['no sub', () => sign({ exp: now() + 60 }), 'token_invalid_claims'],
    ['exp not a number', () => forge({ alg: 'HS256' }, { ...base(), exp: 'soon' }), 'token_invalid_claims'],
    ['exp null', () => forge({ alg: 'HS256' }, { ...base(), exp: null }), 'token_invalid_claims'],
    ['nbf not a number', () => forge({ alg: 'HS256' }, { ...base(), nbf: 'later' }), 'token_invalid_claims'],
    [
      'a header segment of impossible base64url length',
      () => `eyJhb.${forge({ alg: 'HS256' }, base()).split('.').slice(1).join('.')}`,
      'token_malformed',
    ],
    ['iat not a number', () => forge({ alg: 'HS256' }, { ...base(), iat: 'x' }), 'token_invalid_claims'],
    [
      'alg none',
      () => `${forge({ alg: 'none' }, base()).split('.').slice(0, 2).join('.')}.`,
      'token_invalid_signature',
    ],
    ['alg RS256 over an HMAC', () => forge({ alg: 'RS256' }, base()), 'token_invalid_signature'],
    ['no alg', () => forge({ typ: 'JWT' }, base()), 'token_malformed'],
    ['empty alg', () => forge({ alg: '' }, base()), 'token_malformed'],
    ['a header that is not JSON', () => forge('{alg', base()), 'token_malformed'],
    ['a header that is an array', () => forge(['HS256'], base()), 'token_malformed'],
    ['claims that are not JSON', () => forge({ alg: 'HS256' }, 'not json'), 'token_malformed'],
    ['claims that are an array', () => forge({ alg: 'HS256' }, [1, 2]), 'token_malformed'],
    ['two segments', () => 'eyJhbGciOiJIUzI1NiJ9.e30', 'token_malformed'],
    ['four segments', async () => `${await sign(base())}.x`, 'token_malformed'],
    ['not a JWT', () => 'not-a-jwt', 'token_malformed'],
    ['empty', () => '', 'token_malformed'],
    [
      'a non-ASCII payload',
      () => `${forge({ alg: 'HS256' }, base()).split('.')[0]}.é.abc`,
      'token_malformed',
    ],
    [
      'a signature with a character outside base64url',
      async () => `${(await sign(base())).slice(0, -1)}+`,
      'token_malformed',
    ],
    [
      'a tampered signature',
      async () => {
        const token = await sign(base());
        return `${token.slice(0, -2)}${token.endsWith('AA') ? 'BB' : 'AA'}`;
      },
      'token_invalid_signature',
    ],
    [
      'tampered claims',
      async () => {
        const [h, , s] = (await sign(base())).split('.');
        return `${h}.${Buffer.from(JSON.stringify({ ...base(), sub: 'dev-2' })).toString('base64url')}.${s}`;
      },
      'token_invalid_signature',
    ],
    ['the required issuer', () => sign({ ...base(), iss: 'idp' }), 'ok', { issuer: 'idp' }],
    ['another issuer', () => sign({ ...base(), iss: 'evil' }), 'token_invalid_claims', { issuer: 'idp' }],
    ['no issuer when one is required', () => sign(base()), 'token_invalid_claims', { issuer: 'idp' }],
    ['the required audience', () => sign({ ...base(), aud: 'push' }), 'ok', { audience: 'push' }],
    ['an audience list with it', () => sign({ ...base(), aud: ['x', 'push'] }), 'ok', { audience: 'push' }],
    ['another audience', () => sign({ ...base(), aud: 'x' }), 'token_invalid_claims', { audience: 'push' }],
    ['no audience when one is required', () => sign(base()), 'token_invalid_claims', { audience: 'push' }],
    // Key rotation: a key set chosen by `kid`.
    ['the current key of a key set', () => forge({ alg: 'HS256', kid: 'k2' }, base(), key2), 'ok', rotation],
    ['the previous key of a key set', () => forge({ alg: 'HS256', kid: 'k1' }, base(), key1), 'ok', rotation],
    [
      'a kid outside the key set',
      () => forge({ alg: 'HS256', kid: 'k9' }, base(), key1),
      'token_invalid_signature',
      rotation,
    ],
    [
      'a kid of another key than the one that signed',
      () => forge({ alg: 'HS256', kid: 'k1' }, base(), key2),
      'token_invalid_signature',
      rotation,
    ],
    [
      'a kid that is not a string',
      () => forge({ alg: 'HS256', kid: 7 }, base()),
      'token_invalid_signature',
      rotation,
    ],
    ['no kid: the default secret beside a key set', () => sign(base()), 'ok', rotation],
    [
      'no kid and no default secret',
      () => sign(base()),
      'token_invalid_signature',
      { ...rotation, secret: undefined },
    ],
    [
      'an algorithm refused before the key is looked up',
      () => forge({ alg: 'HS512', kid: 'k9' }, base()),
      'token_invalid_signature',
      rotation,
    ],
    // Explicit typing: `typ`, when present, says JWT.
    ['typ JWT', () => forge({ alg: 'HS256', typ: 'JWT' }, base()), 'ok'],
    ['typ in lower case', () => forge({ alg: 'HS256', typ: 'jwt' }, base()), 'ok'],
    ['typ application/jwt', () => forge({ alg: 'HS256', typ: 'application/jwt' }, base()), 'ok'],
    ['typ of an access token', () => forge({ alg: 'HS256', typ: 'at+jwt' }, base()), 'token_invalid_claims'],
    ['typ that is not a string', () => forge({ alg: 'HS256', typ: 1 }, base()), 'token_invalid_claims'],
    [
      'a wrong typ under a bad signature',
      () => forge({ alg: 'HS256', typ: 'at+jwt' }, base(), 'z'.repeat(40)),
      'token_invalid_signature',
    ],
    [
      'a wrong typ on an expired token',
      () => forge({ alg: 'HS256', typ: 'at+jwt' }, { ...base(), exp: now() - 3600 }),
      'token_invalid_claims',
    ],
  ];

  for (const [name, make, expected, options] of cases) {
    it(`${name}: ${expected}, as jose decides`, async () => {
      const { ours, theirs } = await verdicts(await make(), options);
      assert.equal(ours, expected);
      assert.equal(theirs, expected, 'jose disagrees with the expectation');
    });
  }

  it('returns the claims set of a valid token', async () => {
    const claims = hs256Verifier({ secret, clockToleranceS: 0 })(await sign({ ...base(), topics: ['a.*'] }));
    assert.deepEqual(claims['topics'], ['a.*']);
    assert.equal(claims['sub'], 'dev-1');
  });

  it('refuses a crit header, which jose accepts for b64 (stricter on purpose)', async () => {
    const token = forge({ alg: 'HS256', crit: ['b64'], b64: true }, base());
    assert.deepEqual(await verdicts(token), { ours: 'token_malformed', theirs: 'ok' });
  });
});
