import type { AuthErrorCode } from '@pushline/protocol';

/** A refused device handshake; `code` is what the device sees as `connect_error` → `err.message`. */
export class AuthError extends Error {
  override readonly name = 'AuthError';
  readonly code: AuthErrorCode;
  constructor(code: AuthErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
