import { createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import { AuthError } from './auth-error.ts';

export interface Hs256VerifierOptions {
  /**
   * The shared secret (PUSHLINE_DEVICE_JWT_SECRET), used as its UTF-8 bytes: the key of tokens
   * without a `kid` header, and of every token when `keys` is empty.
   */
  readonly secret?: string | undefined;
  /**
   * Key set for rotation (PUSHLINE_DEVICE_JWT_KEYS), kid → secret. When it holds keys, a token with
   * a `kid` header is verified with that key only, and an unknown `kid` is refused.
   */
  readonly keys?: ReadonlyMap<string, string> | undefined;
  /** Seconds of clock skew allowed on `exp` and `nbf`. */
  readonly clockToleranceS: number;
  /** When set, `iss` must be present and equal it. */
  readonly issuer?: string | undefined;
  /** When set, `aud` must be present and be it or contain it. */
  readonly audience?: string | undefined;
}

/** Unpadded base64url, the only encoding of JWS segments. */
const BASE64URL = /^[\w-]*$/;
const NON_ASCII = /[\u0080-\uffff]/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Verifies an HS256 device token synchronously and returns its claims set, or throws `AuthError`
 * with the code jose's `jwtVerify` leads to (auth.ts, `toAuthError`): the same checks in the same
 * order (test/hs256.test.ts compares the two). It exists because every connect verifies a token,
 * and jose's WebCrypto HMAC is a job on the libuv thread pool: docs/performance.md, "In-process
 * HS256 verification".
 *
 * The key comes from the `kid` header when a key set is configured (rotation), and a `typ` header,
 * when present, must say JWT: jose does the same given a key resolver and its `typ` option.
 *
 * Stricter than jose in a few places, none reachable by a token our issuers sign: a `crit` header is
 * refused (`token_malformed`, where jose accepts `crit: ["b64"]`), segments must be unpadded
 * base64url without whitespace, and the signature must be the canonical encoding of the MAC (no
 * stray bits in its last character).
 */
export function hs256Verifier(options: Hs256VerifierOptions): (token: string) => Record<string, unknown> {
  const defaultKey = options.secret === undefined ? undefined : secretKey(options.secret);
  const keySet = new Map([...(options.keys ?? [])].map(([kid, secret]) => [kid, secretKey(secret)]));
  const tolerance = options.clockToleranceS;
  const { issuer, audience } = options;
  const required = ['exp', 'sub'];
  if (issuer !== undefined) required.push('iss');
  if (audience !== undefined) required.push('aud');

  return (token) => {
    const parts = token.split('.');
    if (parts.length !== 3) throw malformed('Invalid Compact JWS');
    const [encodedHeader, encodedClaims, signature] = parts as [string, string, string];
    const header = decodeJson(encodedHeader);
    if (!isObject(header)) throw malformed('JWS Protected Header is invalid');
    if (header['crit'] !== undefined) throw malformed('"crit" Header Parameters are not supported');
    const alg = header['alg'];
    if (typeof alg !== 'string' || alg === '') {
      throw malformed('JWS "alg" (Algorithm) Header Parameter missing or invalid');
    }
    if (alg !== 'HS256') {
      throw new AuthError('token_invalid_signature', '"alg" (Algorithm) Header Parameter value not allowed');
    }
    // The key is chosen before the signature is checked, as jose's key resolver does.
    const kid = header['kid'];
    const key = keySet.size > 0 && kid !== undefined ? keySet.get(String(kid)) : defaultKey;
    if (key === undefined || (keySet.size > 0 && kid !== undefined && typeof kid !== 'string')) {
      throw new AuthError(
        'token_invalid_signature',
        kid === undefined ? 'no key for a token without "kid"' : 'no key matches the "kid" header',
      );
    }
    if (NON_ASCII.test(encodedClaims)) throw malformed('The payload is not a valid base64url string');
    if (!BASE64URL.test(signature)) throw malformed('Failed to base64url decode the signature');

    // Compared as text: the canonical encoding of the MAC, in constant time.
    const signingInput = token.slice(0, encodedHeader.length + 1 + encodedClaims.length);
    const expected = Buffer.from(
      createHmac('sha256', key).update(signingInput).digest('base64url'),
      'latin1',
    );
    const given = Buffer.from(signature, 'latin1');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new AuthError('token_invalid_signature', 'signature verification failed');
    }

    const claims = decodeJson(encodedClaims);
    if (!isObject(claims)) throw malformed('JWT Claims Set must be a top-level JSON object');
    // Explicit typing (RFC 8725 §3.11): a token typed as something else (an access token, an ID
    // token) is not a device token, even when signed with the same key.
    if (header['typ'] !== undefined && !isJwtTyp(header['typ'])) {
      throw invalidClaims('unexpected "typ" JWT header value');
    }
    for (const name of required) {
      if (!Object.hasOwn(claims, name)) throw invalidClaims(`missing required "${name}" claim`);
    }
    if (issuer !== undefined && claims['iss'] !== issuer) throw invalidClaims('unexpected "iss" claim value');
    if (audience !== undefined) {
      const aud = claims['aud'];
      if (!(aud === audience || (Array.isArray(aud) && aud.includes(audience)))) {
        throw invalidClaims('unexpected "aud" claim value');
      }
    }
    const now = Math.floor(Date.now() / 1000);
    if (claims['iat'] !== undefined && typeof claims['iat'] !== 'number') {
      throw invalidClaims('"iat" claim must be a number');
    }
    const nbf = claims['nbf'];
    if (nbf !== undefined) {
      if (typeof nbf !== 'number') throw invalidClaims('"nbf" claim must be a number');
      if (nbf > now + tolerance) throw invalidClaims('"nbf" claim timestamp check failed');
    }
    const exp = claims['exp'];
    if (typeof exp !== 'number') throw invalidClaims('"exp" claim must be a number');
    if (exp <= now - tolerance) throw new AuthError('token_expired', '"exp" claim timestamp check failed');
    return claims;
  };
}

function secretKey(secret: string) {
  return createSecretKey(Buffer.from(secret, 'utf8'));
}

/**
 * Whether a `typ` header says JWT: `JWT` in any case, with or without the `application/` prefix
 * (RFC 7515 §4.1.9), as jose compares it.
 */
export function isJwtTyp(typ: unknown): boolean {
  if (typeof typ !== 'string') return false;
  const lower = typ.toLowerCase();
  return (lower.startsWith('application/') ? lower.slice('application/'.length) : lower) === 'jwt';
}

/** A base64url segment's JSON, or undefined when it is not valid base64url, UTF-8 or JSON. */
function decodeJson(segment: string): unknown {
  if (!BASE64URL.test(segment) || segment.length % 4 === 1) return undefined;
  try {
    return JSON.parse(utf8.decode(Buffer.from(segment, 'base64url')));
  } catch {
    return undefined;
  }
}

/** A plain JSON object (what JSON.parse gives for `{...}`). */
function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function malformed(message: string): AuthError {
  return new AuthError('token_malformed', message);
}

function invalidClaims(message: string): AuthError {
  return new AuthError('token_invalid_claims', message);
}
