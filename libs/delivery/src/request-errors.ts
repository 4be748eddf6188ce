import type { ClientRequest } from 'node:http';

/** Errors of a connected socket that mean the connection broke, not that the exchange was malformed. */
const CONNECTION_LOST_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ETIMEDOUT']);

export type RequestFailure =
  /** The connection could not be opened: the request never left. */
  | { readonly kind: 'unreachable'; readonly code: string }
  /**
   * The connection broke after the request may have been written: the server may have acted on
   * it. `retriable` when nothing was answered yet on a pooled socket (the server may only have
   * closed it while idle); a retry is safe because servers dedupe by message id per connection.
   */
  | { readonly kind: 'dropped'; readonly code: string; readonly retriable: boolean }
  | { readonly kind: 'error'; readonly error: Error };

/**
 * Tracks whether a request's socket got connected, which is what tells a request that never left
 * (connect failed) from one that may have reached the server.
 */
export function trackConnected(req: ClientRequest): () => boolean {
  let connected = false;
  req.once('socket', (socket) => {
    if (!socket.connecting) connected = true;
    else socket.once('connect', () => (connected = true));
  });
  return () => connected;
}

/**
 * What an `error` event of a `ClientRequest` means. Only a request whose socket never connected is
 * known not to have reached the server; once connected, a broken connection leaves the outcome
 * unknown (the server may have died after acting on it).
 */
export function classifyRequestError(
  error: NodeJS.ErrnoException,
  state: { readonly connected: boolean; readonly responded: boolean; readonly reusedSocket: boolean },
): RequestFailure {
  const code = error.code ?? '';
  if (!state.connected && !state.responded && code !== '') return { kind: 'unreachable', code };
  if (CONNECTION_LOST_CODES.has(code)) {
    return { kind: 'dropped', code, retriable: state.reusedSocket && !state.responded };
  }
  return { kind: 'error', error };
}
