/** Socket errors that mean the server is not there (any more) rather than that it misbehaved. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND']);
/** A connection dropped before any answer: the server died or closed an idle keep-alive socket. */
const DROPPED_CODES = new Set(['ECONNRESET', 'EPIPE']);

export type RequestFailure =
  | { readonly kind: 'unreachable'; readonly code: string }
  | { readonly kind: 'dropped'; readonly code: string; readonly reusedSocket: boolean }
  | { readonly kind: 'error'; readonly error: Error };

/**
 * What an `error` event of a `ClientRequest` means. Only before any response can it say the server
 * is gone: a reset after the answer started is a broken exchange.
 */
export function classifyRequestError(
  error: NodeJS.ErrnoException,
  responded: boolean,
  reusedSocket: boolean,
): RequestFailure {
  const code = error.code ?? '';
  if (!responded && UNREACHABLE_CODES.has(code)) return { kind: 'unreachable', code };
  if (!responded && DROPPED_CODES.has(code)) return { kind: 'dropped', code, reusedSocket };
  return { kind: 'error', error };
}
