import type { AuthErrorCode, DeviceErrorCode } from '@pushline/protocol';

/** Codes of every error the SDK raises; switch on `code`, never on the message. */
export type PushlineErrorCode =
  | AuthErrorCode
  | DeviceErrorCode
  /** The app closed the client, or it stopped for good (auth failure, replaced). */
  | 'closed'
  /** Another connection with the same device id took over; the client does not reconnect. */
  | 'replaced'
  /** The token provider threw or returned something that is not a token. */
  | 'token_provider_failed'
  /** A connection attempt failed below the protocol (network, refused upgrade, timeout). */
  | 'connect_failed'
  /** The server did not answer a request in time. */
  | 'request_timeout'
  /** The server answered something the protocol does not allow. */
  | 'protocol_error';

/** Every error the SDK hands to the app. */
export class PushlineError extends Error {
  override readonly name: string = 'PushlineError';
  readonly code: PushlineErrorCode;
  constructor(code: PushlineErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** The server refused the device's token, even a fresh one: the client stopped. */
export class PushlineAuthError extends PushlineError {
  override readonly name = 'PushlineAuthError';
  declare readonly code: AuthErrorCode;
}

/** A subscribe or unsubscribe the server refused (`forbidden`, `too_many_subscriptions`, ...). */
export class PushlineTopicError extends PushlineError {
  override readonly name = 'PushlineTopicError';
  readonly topic: string;
  constructor(code: PushlineErrorCode, topic: string, message: string) {
    super(code, message);
    this.topic = topic;
  }
}

/** A device-to-device send the server refused outright (`forbidden`, `payload_too_large`, ...). */
export class PushlineSendError extends PushlineError {
  override readonly name = 'PushlineSendError';
  /** The message id, to retry with when the code allows it. */
  readonly id: string;
  constructor(code: PushlineErrorCode, id: string, message: string) {
    super(code, message);
    this.id = id;
  }
}
