// The only public entry of @pushline/client, the Pushline device SDK (browsers and Node).
export { PushlineClient, newMessageId } from './client.ts';
export {
  PushlineError,
  PushlineAuthError,
  PushlineTopicError,
  PushlineSendError,
  type PushlineErrorCode,
} from './errors.ts';
export { parseTraceparent, type TraceContext } from './trace.ts';
export { fullJitterDelayMs } from './backoff.ts';
export { tokenExpiryMs } from './token.ts';
export type {
  ConnectionState,
  TokenProvider,
  TokenRequest,
  TokenRequestReason,
  ReconnectOptions,
  PushlineClientOptions,
  PushlineClientEvents,
  PushlineMessage,
  MessageHandler,
  SendOutcome,
  SendResult,
  SendOptions,
  DisconnectInfo,
  ClosedInfo,
} from './types.ts';
