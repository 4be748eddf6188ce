import { type AuthErrorCode, HandshakeAuth, type DeviceTokenClaims } from '@pushline/protocol';
import type { Logger } from '@pushline/telemetry';
import type { ExtendedError, Socket } from 'socket.io';
import { AuthError, type TokenVerifier } from './auth.ts';
import type { ConnectionServerMetrics } from './metrics.ts';

/** The error a refused handshake sends: `connect_error` with `message` = code, `data` = details. */
class HandshakeRefused extends Error implements ExtendedError {
  override readonly name = 'HandshakeRefused';
  readonly data: { code: AuthErrorCode; message: string };
  constructor(code: AuthErrorCode, detail: string) {
    super(code);
    this.data = { code, message: detail };
  }
}

export interface HandshakeOptions {
  readonly verifier: TokenVerifier;
  readonly timeoutMs: number;
  readonly isDraining: () => boolean;
  /** When the engine connection under the socket opened (the handshake budget starts there). */
  readonly openedAt: (socket: Socket) => number;
  readonly claims: WeakMap<Socket, DeviceTokenClaims>;
  readonly metrics: ConnectionServerMetrics;
  readonly logger: Logger;
}

/**
 * socket.io middleware that authenticates the device token in `auth.token`. A refusal sends
 * `connect_error` with a stable code and then closes the transport, so no unauthenticated
 * socket stays open; verification that takes longer than the handshake bound is refused with
 * `handshake_timeout`.
 */
export function handshakeMiddleware(options: HandshakeOptions) {
  const { metrics, logger } = options;
  return (socket: Socket, next: (err?: ExtendedError) => void): void => {
    const refuse = (code: AuthErrorCode, detail: string) => {
      metrics.authFailures.inc({ code });
      logger.debug({ code, detail }, 'device handshake refused');
      next(new HandshakeRefused(code, detail));
      // socket.io writes CONNECT_ERROR on the next tick; engine.io's close() flushes it first.
      setImmediate(() => socket.conn.close());
    };
    if (options.isDraining()) return refuse('server_draining', 'server is shutting down; connect to another');

    const auth = HandshakeAuth.safeParse(socket.handshake.auth);
    if (!auth.success) {
      const token = (socket.handshake.auth as { token?: unknown } | undefined)?.token;
      return token === undefined || token === null || token === ''
        ? refuse('token_missing', 'handshake auth.token is required')
        : refuse('token_malformed', 'auth.token must be a string of at most 8192 characters');
    }

    const budget = options.timeoutMs - (Date.now() - options.openedAt(socket));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new AuthError('handshake_timeout', 'token verification exceeded the handshake bound')),
        Math.max(0, budget),
      );
    });
    Promise.race([options.verifier.verify(auth.data.token), timeout])
      .then((claims) => {
        if (options.isDraining())
          return refuse('server_draining', 'server is shutting down; connect to another');
        options.claims.set(socket, claims);
        next();
      })
      .catch((err: unknown) => {
        if (err instanceof AuthError) return refuse(err.code, err.message);
        logger.error({ err }, 'device handshake failed unexpectedly');
        refuse('handshake_timeout', 'could not verify the token; retry later');
      })
      .finally(() => clearTimeout(timer));
  };
}
