export { Identifier, MessageId, JsonPayload, TraceContext, payloadBytes } from './common.ts';
export {
  DeliveryOutcome,
  DeliverySource,
  DeliverRequest,
  DeliverResult,
  BroadcastRequest,
  BroadcastResult,
} from './delivery.ts';
export {
  DEVICE_PROTOCOL_VERSION,
  DeviceEvents,
  HandshakeAuth,
  DeviceTokenClaims,
  AuthErrorCode,
  DeviceMessage,
  DeviceMessageAck,
  SendRequest,
  SendAck,
  DeviceErrorCode,
  DeviceErrorAck,
  SubscribeRequest,
  SubscribeAck,
  ReconnectReason,
  ReconnectHint,
} from './device.ts';
export {
  DisconnectReason,
  ConnectionEvent,
  PushTarget,
  pushTargetKey,
  PushRequest,
  DeliveryEvent,
  DlqHeaders,
  DlqReason,
  StoredMessage,
} from './events.ts';
