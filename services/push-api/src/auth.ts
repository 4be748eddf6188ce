import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { LRUCache } from 'lru-cache';
import type { PushApiConfig } from '@pushline/config';
import { ProblemError } from './problem.ts';

export type ApiScope = PushApiConfig['PUSHLINE_API_KEYS'][number]['scopes'][number];

/** An authenticated caller. `id` is a fingerprint of the key, safe to log; the key itself is never kept. */
export interface ApiPrincipal {
  readonly id: string;
  readonly scopes: ReadonlySet<ApiScope>;
}

interface StoredKey {
  readonly digest: Buffer;
  readonly principal: ApiPrincipal;
}

const sha256 = (value: string): Buffer => createHash('sha256').update(value, 'utf8').digest();

/** The fingerprint that identifies a key in logs, rate limits and idempotency records. */
export function apiKeyId(key: string): string {
  return sha256(key).subarray(0, 6).toString('hex');
}

/** Verified keys remembered at once; a deployment has a handful of keys, each caller one. */
const VERIFIED_KEYS_MAX = 1024;

/**
 * Holds SHA-256 digests of the configured keys. Lookups hash the presented key and compare it with
 * every stored digest in constant time, so neither the match position nor a prefix leaks through
 * timing. A key that verified is remembered (bounded LRU), so a caller's later requests cost a map
 * lookup instead of a hash and a compare per configured key. Only valid keys are remembered: a
 * flood of wrong keys cannot evict them, and never costs more than before.
 */
export class ApiKeyStore {
  readonly #keys: readonly StoredKey[];
  readonly #verified = new LRUCache<string, ApiPrincipal>({ max: VERIFIED_KEYS_MAX });

  constructor(specs: PushApiConfig['PUSHLINE_API_KEYS']) {
    this.#keys = specs.map((spec) => {
      const digest = sha256(spec.key);
      return {
        digest,
        principal: { id: apiKeyId(spec.key), scopes: new Set(spec.scopes) },
      };
    });
  }

  authenticate(presented: string): ApiPrincipal | undefined {
    const known = this.#verified.get(presented);
    if (known) return known;
    const found = this.#verify(presented);
    if (found) this.#verified.set(presented, found);
    return found;
  }

  #verify(presented: string): ApiPrincipal | undefined {
    const digest = sha256(presented);
    let found: ApiPrincipal | undefined;
    for (const key of this.#keys) {
      // No early exit: every key is compared whatever the outcome.
      if (timingSafeEqual(key.digest, digest)) found = key.principal;
    }
    return found;
  }
}

function hasScope(principal: ApiPrincipal, scope: ApiScope): boolean {
  return principal.scopes.has('admin') || principal.scopes.has(scope);
}

/** The key from `authorization: Bearer <key>` or `x-api-key: <key>`. */
function presentedKey(req: Request): string | undefined {
  const authorization = req.get('authorization');
  if (authorization) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    return match?.[1];
  }
  const header = req.get('x-api-key');
  return header ? header.trim() : undefined;
}

export function principalOf(res: Response): ApiPrincipal {
  const principal = (res.locals as { principal?: ApiPrincipal }).principal;
  if (!principal) throw new Error('principalOf called on a route without authentication');
  return principal;
}

/** Authenticates the caller (401) and stores the principal in `res.locals.principal`. */
export function authenticate(store: ApiKeyStore): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const key = presentedKey(req);
    if (!key) {
      throw new ProblemError(
        'unauthorized',
        'Send the API key as `authorization: Bearer <key>` or `x-api-key`.',
      );
    }
    const principal = store.authenticate(key);
    if (!principal) throw new ProblemError('unauthorized', 'The API key is not valid.');
    (res.locals as { principal?: ApiPrincipal }).principal = principal;
    next();
  };
}

/** Requires a scope of the authenticated caller (403). */
export function requireScope(scope: ApiScope): RequestHandler {
  return (_req: Request, res: Response, next: NextFunction) => {
    if (!hasScope(principalOf(res), scope)) {
      throw new ProblemError('forbidden', `This operation needs the \`${scope}\` scope.`);
    }
    next();
  };
}
