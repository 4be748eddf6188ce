import type {
  BroadcastRequest,
  BroadcastResult,
  DeliverRequest,
  DeliverResult,
  DeliverySource,
  ReplacedNotice,
  ReplacedResult,
  TraceContext,
} from '@pushline/protocol';

/** How a message reaches the connection server that holds a device (or any server, for a topic). */
export interface DeliveryTransport {
  /**
   * Never throws for device outcomes. A server the call could not reach (its channel could not
   * be opened) gives `{ outcome: 'not_connected', reason: 'server_unreachable' }`: known not
   * delivered. A channel that broke after the call was written gives `{ outcome: 'timeout',
   * reason: 'server_lost' }`, and no answer within `req.timeoutMs` plus a margin `{ outcome:
   * 'timeout', reason: 'server_timeout' }`: both may have been delivered (`TransportReason`).
   * Throws `InternalAuthError` when the server refuses the internal token and
   * `DeliveryTransportError` for any other failure.
   */
  deliver(serverUrl: string, req: DeliverRequest): Promise<DeliverResult>;
  /**
   * Throws `DeliveryTransportError` when it gets no count: `server_unreachable` (not sent, safe to
   * try another server), `server_lost` or `server_timeout` (subscribers may have it), ...
   */
  broadcast(serverUrl: string, req: BroadcastRequest): Promise<BroadcastResult>;
  /**
   * Tells a server that a device it held has connected elsewhere, so it closes that connection
   * if it is still `notice.connectionId`. Throws `DeliveryTransportError` when it gets no answer.
   */
  replaced(serverUrl: string, notice: ReplacedNotice): Promise<ReplacedResult>;
  close(): Promise<void>;
}

/** A message to route, before the router knows which device, connection or server gets it. */
export interface OutgoingMessage {
  messageId: string;
  payload: unknown;
  source: DeliverySource;
  /** Sender device, for device-to-device messages. */
  from?: string;
  /** Sender's user and tenant, for device-to-device messages (the receiving server checks its policy). */
  fromUser?: string;
  fromTenant?: string;
  /** Who chose `messageId` for a backend message (`DeliverRequest.origin`): its API key id. */
  origin?: string;
  /** How long the device has to ack, as the owning server measures it. */
  timeoutMs: number;
  /**
   * The origin's trace context, used as the parent of the router's spans when no span is
   * active (e.g. a socket handler that only has the device's traceparent).
   */
  trace?: TraceContext;
}

export interface RoutedResult extends DeliverResult {
  deviceId: string;
  /** The server that answered, when the device was found in the registry. */
  serverId?: string;
  /** Deliveries tried, at least 1: 2 when a stale cache entry sent the first one to the wrong connection. */
  attempts: number;
}
