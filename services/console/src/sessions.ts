import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Why a sign-in or a request was refused. */
export type AccessRefusal = 'unknown_key' | 'not_admin';

interface Session {
  /** The operator's key, kept on the server only: the console calls the push-api with it. */
  readonly apiKey: string;
  readonly expiresAt: number;
}

const digest = (value: string): Buffer => createHash('sha256').update(value, 'utf8').digest();

/**
 * Console sign-ins. The operator proves an admin API key once; the browser then holds only an
 * opaque, HttpOnly session cookie, so no key ever lives in the page or its script. Keys are
 * compared as SHA-256 digests in constant time, the same way the push-api checks them.
 */
export class ConsoleSessions {
  readonly #keys: readonly { digest: Buffer; admin: boolean }[];
  readonly #ttlMs: number;
  readonly #sessions = new Map<string, Session>();

  constructor(keys: readonly { readonly key: string; readonly scopes: readonly string[] }[], ttlMs: number) {
    this.#keys = keys.map((k) => ({ digest: digest(k.key), admin: k.scopes.includes('admin') }));
    this.#ttlMs = ttlMs;
  }

  /** Checks a presented key: only admin keys open the console. */
  check(key: string): AccessRefusal | undefined {
    const presented = digest(key);
    let match: { admin: boolean } | undefined;
    // No early exit: every key is compared whatever the outcome.
    for (const k of this.#keys) if (timingSafeEqual(k.digest, presented)) match = k;
    if (!match) return 'unknown_key';
    return match.admin ? undefined : 'not_admin';
  }

  /** Opens a session for an admin key; returns its id (the cookie value) or why it was refused. */
  signIn(key: string): { id: string } | { refused: AccessRefusal } {
    const refused = this.check(key);
    if (refused) return { refused };
    this.#prune();
    const id = randomBytes(32).toString('base64url');
    this.#sessions.set(id, { apiKey: key, expiresAt: Date.now() + this.#ttlMs });
    return { id };
  }

  /** The session's key, if the session exists and has not expired. */
  keyOf(id: string | undefined): string | undefined {
    if (!id) return undefined;
    const session = this.#sessions.get(id);
    if (!session) return undefined;
    if (session.expiresAt <= Date.now()) {
      this.#sessions.delete(id);
      return undefined;
    }
    return session.apiKey;
  }

  signOut(id: string | undefined): void {
    if (id) this.#sessions.delete(id);
  }

  get ttlSeconds(): number {
    return Math.floor(this.#ttlMs / 1000);
  }

  #prune(): void {
    const now = Date.now();
    for (const [id, s] of this.#sessions) if (s.expiresAt <= now) this.#sessions.delete(id);
  }
}
