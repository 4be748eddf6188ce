import { randomBytes } from 'node:crypto';
import type { DeliverResult, DeviceTokenClaims, DisconnectReason, ReconnectHint } from '@pushline/protocol';
import { DeviceEvents } from '@pushline/protocol';
import type { Socket } from 'socket.io';

/** What the server remembers about a message id it sent on this connection. */
export type SentMessage =
  | { readonly state: 'pending'; readonly result: Promise<DeliverResult> }
  | { readonly state: 'done'; readonly outcome: DeliverResult['outcome'] };

/**
 * One authenticated device connection. It owns the per-connection state that outlives single
 * events: the registry connection id, the bounded memory of sent message ids (dedupe), the
 * offline-inbox gate and the liveness deadlines. Topic subscriptions are the socket's rooms.
 */
export class DeviceConnection {
  readonly socket: Socket;
  readonly deviceId: string;
  readonly userId: string;
  readonly tenantId: string | undefined;
  readonly claims: DeviceTokenClaims;
  /** Unique per connection; the registry's compare-and-delete guard. */
  readonly connectionId = randomBytes(12).toString('base64url');
  readonly connectedAt = Date.now();
  /** Recycle time: the connection gets a reconnect hint and is closed after it. */
  readonly recycleAt: number;
  lastActivity = this.connectedAt;
  /** When the registry entry expires unless refreshed (set once registered). */
  registryExpiresAt = 0;
  /** Resolves once the registry write settled; unregister waits for it so it cannot run first. */
  registered: Promise<void> = Promise.resolve();
  /** Why the server ended the connection; unset when the device or network ended it. */
  closeReason: DisconnectReason | undefined;
  #closed = false;
  #gate: Promise<void> | undefined;
  // Allocated on first use: most connections sit idle, and empty maps still cost memory per connection.
  #sent: Map<string, SentMessage> | undefined;
  readonly #dedupeWindow: number;
  #onClose: Set<() => void> | undefined;

  constructor(options: {
    socket: Socket;
    claims: DeviceTokenClaims;
    lifetimeMs: number;
    dedupeWindow: number;
  }) {
    this.socket = options.socket;
    this.claims = options.claims;
    this.deviceId = options.claims.sub;
    this.userId = options.claims.uid;
    this.tenantId = options.claims.tid;
    this.recycleAt = this.connectedAt + options.lifetimeMs;
    this.#dedupeWindow = options.dedupeWindow;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Live deliveries wait for this while the offline inbox is drained, so stored messages reach
   * the device first. Undefined when nothing is being drained.
   */
  get gate(): Promise<void> | undefined {
    return this.#gate;
  }

  /** Holds live deliveries until `work` settles (whether it succeeds or not). */
  holdDeliveriesUntil(work: Promise<unknown>): void {
    const gate: Promise<void> = work.then(
      () => undefined,
      () => undefined,
    );
    this.#gate = gate;
    void gate.then(() => {
      if (this.#gate === gate) this.#gate = undefined;
    });
  }

  touch(): void {
    this.lastActivity = Date.now();
  }

  sentMessage(id: string): SentMessage | undefined {
    return this.#sent?.get(id);
  }

  rememberSent(id: string, entry: SentMessage): void {
    const sent = (this.#sent ??= new Map());
    sent.delete(id);
    sent.set(id, entry);
    // Map iteration order is insertion order, so the first key is the oldest.
    while (sent.size > this.#dedupeWindow) {
      const oldest = sent.keys().next().value;
      if (oldest === undefined) break;
      sent.delete(oldest);
    }
  }

  /** Runs `fn` when the connection ends (at once if it already has); returns an unsubscribe. */
  onClose(fn: () => void): () => void {
    if (this.#closed) {
      fn();
      return () => {};
    }
    const listeners = (this.#onClose ??= new Set());
    listeners.add(fn);
    return () => listeners.delete(fn);
  }

  /** Tells the device to reconnect (to any server) after `afterMs`. */
  hint(hint: ReconnectHint): void {
    if (!this.#closed) this.socket.emit(DeviceEvents.reconnect, hint);
  }

  /** Ends the connection from the server side, remembering why (the first reason wins). */
  disconnect(reason: DisconnectReason): void {
    this.closeReason ??= reason;
    if (!this.#closed) this.socket.disconnect(true);
  }

  /** Called once from the socket's `disconnect` handler. */
  markClosed(): void {
    if (this.#closed) return;
    this.#closed = true;
    const listeners = [...(this.#onClose ?? [])];
    this.#onClose = undefined;
    for (const fn of listeners) fn();
  }
}
