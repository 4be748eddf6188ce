export { Identifier, MessageId, JsonPayload, TraceContext, payloadBytes } from './common.ts';
export {
  JSON_DEPTH_CEILING,
  DEFAULT_MAX_JSON_DEPTH,
  jsonTextTooDeep,
  checkJsonValue,
} from './json-limits.ts';
export type { JsonValueProblem } from './json-limits.ts';
export {
  DeliveryOutcome,
  DeliverySource,
  DeliverRequest,
  DeliverResult,
  TransportReason,
  BroadcastRequest,
  BroadcastResult,
} from './delivery.ts';
export { PROBLEM_TYPE_BASE, PROBLEM_CONTENT_TYPE, problemTypeUri, FieldError, Problem } from './problem.ts';
export {
  CHANNEL_PATH,
  CHANNEL_VERSION,
  CHANNEL_PROTOCOL,
  CHANNEL_WINDOW_HEADER,
  CHANNEL_MAX_FRAME_CALLS,
  CHANNEL_ENVELOPE_DEPTH,
  ReplacedNotice,
  ReplacedResult,
  ChannelCall,
  ChannelCallsFrame,
  ChannelErrorCode,
  ChannelResult,
  ChannelResultsFrame,
} from './channel.ts';
export type { ChannelOp } from './channel.ts';
export {
  DEVICE_PROTOCOL_VERSION,
  DeviceEvents,
  DEVICE_REQUEST_EVENTS,
  DeviceToken,
  HandshakeAuth,
  DeviceTokenClaims,
  AuthErrorCode,
  DeviceMessage,
  DeviceMessageAck,
  SendRequest,
  MAX_SEND_TIMEOUT_MS,
  SendAck,
  DeviceErrorCode,
  DeviceErrorAck,
  SubscribeRequest,
  SubscribeAck,
  ReconnectReason,
  ReconnectHint,
  TokenExpiring,
  RefreshTokenRequest,
  RefreshTokenAck,
} from './device.ts';
export type { DeviceRequestEvent } from './device.ts';
export { ServerBroadcastEvents, RemoteBroadcast, RemoteBroadcastResult } from './server-broadcast.ts';
export {
  DisconnectReason,
  ConnectionEvent,
  PushTarget,
  pushTargetKey,
  PushRequest,
  DeliveryEvent,
  RecordedOutcome,
  DlqHeaders,
  DlqReason,
  StoredMessage,
} from './events.ts';
