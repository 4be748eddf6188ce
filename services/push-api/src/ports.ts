import type {
  BroadcastResult,
  DeliverResult,
  DeliverySource,
  StoredMessage,
  TraceContext,
} from '@pushline/protocol';

/**
 * What push-api needs from its collaborators, declared here so the API depends on behaviour, not
 * on packages: `MessageRouter` from @pushline/delivery and `RedisOfflineStore` from
 * @pushline/offline-store satisfy these structurally.
 */

interface OutgoingMessage {
  readonly messageId: string;
  readonly payload: unknown;
  readonly source: DeliverySource;
  readonly from?: string;
  readonly timeoutMs: number;
  readonly trace?: TraceContext;
}

export interface RoutedResult extends DeliverResult {
  readonly deviceId: string;
  readonly serverId?: string | undefined;
}

export interface PushRouter {
  toDevice(deviceId: string, msg: OutgoingMessage): Promise<RoutedResult>;
  toUser(userId: string, msg: OutgoingMessage): Promise<RoutedResult[]>;
  toTopic(topic: string, msg: OutgoingMessage): Promise<BroadcastResult>;
}

/** Store-and-forward for devices that cannot take a message now. */
export interface OfflineMessageStore {
  /** `refused` says why a message was not stored (its API key is at its quota). */
  store(
    deviceId: string,
    msg: StoredMessage,
  ): Promise<{ stored: boolean; evicted: number; refused?: 'quota_exceeded' | undefined }>;
}
