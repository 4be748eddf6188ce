/**
 * The `exp` claim of a JWT in milliseconds since the epoch, read without verifying anything (the
 * server verifies; the client only needs to know when to fetch the next token). Undefined when the
 * token is not a JWT or has no numeric `exp`.
 */
export function tokenExpiryMs(token: string): number | undefined {
  const part = token.split('.')[1];
  if (!part) return undefined;
  try {
    const json = base64UrlDecode(part);
    const claims: unknown = JSON.parse(json);
    if (typeof claims !== 'object' || claims === null) return undefined;
    const exp = (claims as { exp?: unknown }).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** atob exists in browsers and in Node ≥ 16, so one code path serves both. */
function base64UrlDecode(part: string): string {
  const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
  const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/**
 * When to fetch the next token: `marginMs` before it expires, but never later than half way through
 * its life, so a short-lived token is renewed in time too.
 */
export function refreshAtMs(obtainedAtMs: number, expiresAtMs: number, marginMs: number): number {
  const lifetime = Math.max(0, expiresAtMs - obtainedAtMs);
  return expiresAtMs - Math.min(marginMs, lifetime / 2);
}
