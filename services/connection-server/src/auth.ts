import { ConfigError, type ConnectionServerConfig } from '@pushline/config';
import { DeviceTokenClaims } from '@pushline/protocol';
import { createRemoteJWKSet, importSPKI, jwtVerify, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose';
import { AuthError } from './auth-error.ts';
import { hs256Verifier, isJwtTyp } from './hs256.ts';

export { AuthError } from './auth-error.ts';

/** Verifies device tokens and returns their claims, or throws `AuthError`. */
export interface TokenVerifier {
  verify(token: string): Promise<DeviceTokenClaims>;
}

type VerifyKey = Awaited<ReturnType<typeof importSPKI>> | JWTVerifyGetKey;

/**
 * Builds the verifier the configuration asks for: HS256 with a shared secret and/or a key set chosen
 * by `kid` (verified in process, hs256.ts), or RS256/ES256 with a PEM public key or a JWKS URL (keys fetched and cached by jose,
 * refetched on an unknown `kid`). Throws ConfigError when the key material for the algorithm is
 * missing.
 */
export async function createTokenVerifier(config: ConnectionServerConfig): Promise<TokenVerifier> {
  const alg = config.PUSHLINE_DEVICE_JWT_ALG;
  if (alg === 'HS256') {
    const secret = config.PUSHLINE_DEVICE_JWT_SECRET;
    const keys = config.PUSHLINE_DEVICE_JWT_KEYS;
    if (!secret && (keys === undefined || keys.size === 0)) {
      throw new ConfigError([
        {
          variable: 'PUSHLINE_DEVICE_JWT_SECRET',
          message: 'HS256 needs PUSHLINE_DEVICE_JWT_SECRET or PUSHLINE_DEVICE_JWT_KEYS',
        },
      ]);
    }
    const verifyHs256 = hs256Verifier({
      secret,
      keys,
      clockToleranceS: config.PUSHLINE_DEVICE_JWT_CLOCK_TOLERANCE_S,
      issuer: config.PUSHLINE_DEVICE_JWT_ISSUER,
      audience: config.PUSHLINE_DEVICE_JWT_AUDIENCE,
    });
    return {
      verify: async (token) => deviceClaims(verifyHs256(token)),
    };
  }
  let key: VerifyKey;
  if (config.PUSHLINE_DEVICE_JWT_PUBLIC_KEY) {
    try {
      key = await importSPKI(config.PUSHLINE_DEVICE_JWT_PUBLIC_KEY, alg);
    } catch (err) {
      throw new ConfigError([
        {
          variable: 'PUSHLINE_DEVICE_JWT_PUBLIC_KEY',
          message: `not a ${alg} SPKI PEM key: ${err instanceof Error ? err.message : String(err)}`,
        },
      ]);
    }
  } else if (config.PUSHLINE_DEVICE_JWT_JWKS_URL) {
    key = createRemoteJWKSet(new URL(config.PUSHLINE_DEVICE_JWT_JWKS_URL), {
      // A key fetch must fit in the handshake bound, which also applies (handshake.ts).
      timeoutDuration: Math.min(5_000, config.PUSHLINE_HANDSHAKE_TIMEOUT_MS),
    });
  } else {
    throw new ConfigError([
      {
        variable: 'PUSHLINE_DEVICE_JWT_PUBLIC_KEY',
        message: `${alg} needs PUSHLINE_DEVICE_JWT_PUBLIC_KEY or PUSHLINE_DEVICE_JWT_JWKS_URL`,
      },
    ]);
  }

  const options: JWTVerifyOptions = {
    algorithms: [alg],
    clockTolerance: config.PUSHLINE_DEVICE_JWT_CLOCK_TOLERANCE_S,
    requiredClaims: ['exp', 'sub'],
    ...(config.PUSHLINE_DEVICE_JWT_ISSUER ? { issuer: config.PUSHLINE_DEVICE_JWT_ISSUER } : {}),
    ...(config.PUSHLINE_DEVICE_JWT_AUDIENCE ? { audience: config.PUSHLINE_DEVICE_JWT_AUDIENCE } : {}),
  };

  return {
    async verify(token: string): Promise<DeviceTokenClaims> {
      let verified: Awaited<ReturnType<typeof jwtVerify>>;
      try {
        // jose has separate overloads for a key and a key getter, hence the narrowing.
        verified =
          typeof key === 'function'
            ? await jwtVerify(token, key, options)
            : await jwtVerify(token, key, options);
      } catch (err) {
        throw toAuthError(err);
      }
      // jose's `typ` option would require the header; a device token may leave it out.
      if (verified.protectedHeader.typ !== undefined && !isJwtTyp(verified.protectedHeader.typ)) {
        throw new AuthError('token_invalid_claims', 'unexpected "typ" JWT header value');
      }
      return deviceClaims(verified.payload);
    },
  };
}

/** The verified claims set as the platform's device claims, or `token_invalid_claims`. */
function deviceClaims(payload: unknown): DeviceTokenClaims {
  const claims = DeviceTokenClaims.safeParse(payload);
  if (!claims.success) {
    throw new AuthError(
      'token_invalid_claims',
      claims.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
    );
  }
  return claims.data;
}

/** Maps jose's error codes to the stable codes of the device protocol (docs/protocol.md). */
export function toAuthError(err: unknown): AuthError {
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return new AuthError('token_expired', message, { cause: err });
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return new AuthError('token_invalid_signature', message, { cause: err });
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return new AuthError('token_invalid_claims', message, { cause: err });
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    case 'ERR_JOSE_NOT_SUPPORTED':
    case 'ERR_JOSE_GENERIC':
      return new AuthError('token_malformed', message, { cause: err });
    default:
      // The JWKS could not be fetched or parsed in time: nothing is wrong with the token, so
      // the device is told to retry like after any slow handshake.
      return new AuthError('handshake_timeout', message, { cause: err });
  }
}
