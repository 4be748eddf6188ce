import {
  SubscribeRequest,
  type AuthErrorCode,
  type DeviceErrorAck,
  type DeviceErrorCode,
  type DeviceTokenClaims,
  type SubscribeAck,
} from '@pushline/protocol';
import type { DeviceConnection } from './connection.ts';
import type { ConnectionServerMetrics } from './metrics.ts';

/** Decides whether a device may subscribe to a topic, from its token claims. */
export type TopicAuthorizer = (claims: DeviceTokenClaims, topic: string) => boolean;

/** The socket.io room of a topic's subscribers. */
export function topicRoom(topic: string): string {
  return `${TOPIC_ROOM_PREFIX}${topic}`;
}
const TOPIC_ROOM_PREFIX = 'topic:';

function topicCount(rooms: ReadonlySet<string>): number {
  let count = 0;
  for (const room of rooms) if (room.startsWith(TOPIC_ROOM_PREFIX)) count++;
  return count;
}

/** Topics of the per-user namespace: `user:<uid>` is the private topic of user `<uid>`. */
const USER_TOPIC_PREFIX = 'user:';

/**
 * Default policy: the device's own user topic `user:<uid>` (exactly: user ids may hold every
 * character a topic may, `.` and `:` included, so no suffix after the uid can be told apart from
 * another user's id), and the topics its `topics` claim lists, exactly or by prefix when the entry
 * ends with `*`. A prefix entry never reaches into the `user:` namespace: `user:alice*` would
 * match `user:alice.smith`, the private topic of another user. Only an exact entry grants another
 * user's topic, as a deliberate choice of the token's issuer.
 */
export const defaultTopicAuthorizer: TopicAuthorizer = (claims, topic) => {
  if (topic === `${USER_TOPIC_PREFIX}${claims.uid}`) return true;
  const userTopic = topic.startsWith(USER_TOPIC_PREFIX);
  for (const entry of claims.topics ?? []) {
    if (!entry.endsWith('*')) {
      if (topic === entry) return true;
    } else if (!userTopic && topic.startsWith(entry.slice(0, -1))) {
      return true;
    }
  }
  return false;
};

export function errorAck(code: DeviceErrorCode, message: string, reason?: AuthErrorCode): DeviceErrorAck {
  return { ok: false, error: reason === undefined ? { code, message } : { code, message, reason } };
}

/** Handles `subscribe` / `unsubscribe` requests of one connection. */
export class Subscriptions {
  readonly #authorize: TopicAuthorizer;
  readonly #maxTopics: number;
  readonly #metrics: ConnectionServerMetrics;

  constructor(options: { authorize: TopicAuthorizer; maxTopics: number; metrics: ConnectionServerMetrics }) {
    this.#authorize = options.authorize;
    this.#maxTopics = options.maxTopics;
    this.#metrics = options.metrics;
  }

  async subscribe(conn: DeviceConnection, raw: unknown): Promise<SubscribeAck> {
    const ack = await this.#subscribe(conn, raw);
    this.#metrics.subscriptions.inc({ op: 'subscribe', result: ack.ok ? 'ok' : ack.error.code });
    return ack;
  }

  async unsubscribe(conn: DeviceConnection, raw: unknown): Promise<SubscribeAck> {
    const req = SubscribeRequest.safeParse(raw);
    if (!req.success) {
      this.#metrics.subscriptions.inc({ op: 'unsubscribe', result: 'invalid_request' });
      return errorAck('invalid_request', req.error.issues[0]?.message ?? 'invalid unsubscribe request');
    }
    const { topic } = req.data;
    // Unsubscribing from a topic the device does not hold is not an error: the end state is the same.
    const room = topicRoom(topic);
    if (conn.socket.rooms.has(room)) await conn.socket.leave(room);
    this.#metrics.subscriptions.inc({ op: 'unsubscribe', result: 'ok' });
    return { ok: true, topic };
  }

  /** Leaves every topic the connection's (refreshed) claims no longer allow; returns how many. */
  async prune(conn: DeviceConnection): Promise<number> {
    const denied = [...conn.socket.rooms].filter(
      (room) =>
        room.startsWith(TOPIC_ROOM_PREFIX) &&
        !this.#authorize(conn.claims, room.slice(TOPIC_ROOM_PREFIX.length)),
    );
    for (const room of denied) await conn.socket.leave(room);
    return denied.length;
  }

  async #subscribe(conn: DeviceConnection, raw: unknown): Promise<SubscribeAck> {
    const req = SubscribeRequest.safeParse(raw);
    if (!req.success) {
      return errorAck('invalid_request', req.error.issues[0]?.message ?? 'invalid subscribe request');
    }
    const { topic } = req.data;
    // The socket's rooms are the subscriptions: no copy per connection (docs/performance.md, "Lazy per-connection state").
    const room = topicRoom(topic);
    if (conn.socket.rooms.has(room)) return { ok: true, topic };
    if (!this.#authorize(conn.claims, topic)) {
      return errorAck('forbidden', `not allowed to subscribe to ${topic}`);
    }
    if (topicCount(conn.socket.rooms) >= this.#maxTopics) {
      return errorAck('too_many_subscriptions', `at most ${this.#maxTopics} topics per device`);
    }
    // join() updates the local rooms before it awaits the adapter, so a concurrent subscribe sees the count.
    await conn.socket.join(room);
    return { ok: true, topic };
  }
}
