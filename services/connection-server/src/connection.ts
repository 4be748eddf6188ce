import type { DeliverResult, DeviceTokenClaims, DisconnectReason, ReconnectHint } from '@pushline/protocol';
import { DeviceEvents } from '@pushline/protocol';
import type { Socket } from 'socket.io';

/** What the server remembers about a message id it sent on this connection. */
export type SentMessage =
  | { readonly state: 'pending'; readonly result: Promise<DeliverResult> }
  | { readonly state: 'done'; readonly outcome: DeliverResult['outcome'] };

/**
 * One authenticated device connection. It owns the per-connection state that outlives single
 * events: the bounded memory of sent message ids (dedupe), the offline-inbox gate and the
 * liveness deadlines. Topic subscriptions are the socket's rooms.
 *
 * Idle connections are most of a server's memory, so it keeps nothing it can derive (the ids are
 * the claims' and the socket's), nothing past its use (the registration promise, the inbox gate),
 * and its times as small offsets from `connectedAt` (docs/performance.md, "Times as small offsets").
 */
export class DeviceConnection {
  readonly socket: Socket;
  readonly connectedAt = Date.now();
  /** Why the server ended the connection; unset when the device or network ended it. */
  closeReason: DisconnectReason | undefined;
  readonly #lifetimeMs: number;
  /** lastActivity − connectedAt. */
  #activeAfterMs = 0;
  /** registryExpiresAt − connectedAt; 0 until registered. */
  #expiresAfterMs = 0;
  #closed = false;
  #claims: DeviceTokenClaims;
  /** Whether `token_expiring` went out for the current token. */
  #tokenWarned = false;
  #gate: Promise<void> | undefined;
  /**
   * The connection's registry write while it is in flight; undefined before it starts and once it
   * settled (docs/performance.md, "Registration write kept only while in flight"). Set and cleared
   * by `trackRegistration` alone, whatever order its caller's awaits run in.
   */
  #registryWrite: Promise<void> | undefined;
  // Allocated on first use: most connections sit idle (docs/performance.md, "Lazy per-connection state").
  #sent: Map<string, SentMessage> | undefined;
  #onClose: Set<() => void> | undefined;

  constructor(options: { socket: Socket; claims: DeviceTokenClaims; lifetimeMs: number }) {
    this.socket = options.socket;
    this.#claims = options.claims;
    this.#lifetimeMs = options.lifetimeMs;
  }

  /** The verified claims of the connection's current token (the handshake's, or a refreshed one). */
  get claims(): DeviceTokenClaims {
    return this.#claims;
  }

  /**
   * Takes the claims of a fresh token (`refresh_token`). The caller has checked that they name
   * the same device, user and tenant; the expiry warning starts over for the new `exp`.
   */
  replaceClaims(claims: DeviceTokenClaims): void {
    this.#claims = claims;
    this.#tokenWarned = false;
  }

  get tokenWarned(): boolean {
    return this.#tokenWarned;
  }

  markTokenWarned(): void {
    this.#tokenWarned = true;
  }

  get deviceId(): string {
    return this.#claims.sub;
  }

  get userId(): string {
    return this.#claims.uid;
  }

  get tenantId(): string | undefined {
    return this.#claims.tid;
  }

  /**
   * Unique per connection; the registry's compare-and-delete guard. The socket's id: random
   * (120 bits) and already kept per socket.
   */
  get connectionId(): string {
    return this.socket.id;
  }

  /** Recycle time: the connection gets a reconnect hint and is closed after it. */
  get recycleAt(): number {
    return this.connectedAt + this.#lifetimeMs;
  }

  /** The last application traffic (a device request or an ack). */
  get lastActivity(): number {
    return this.connectedAt + this.#activeAfterMs;
  }

  /** When the registry entry expires unless refreshed; 0 until registered. */
  get registryExpiresAt(): number {
    return this.#expiresAfterMs === 0 ? 0 : this.connectedAt + this.#expiresAfterMs;
  }

  set registryExpiresAt(at: number) {
    this.#expiresAfterMs = at === 0 ? 0 : Math.max(1, at - this.connectedAt);
  }

  /**
   * Tracks `write`, the connection's registry write (it never rejects), until it settles:
   * `afterRegistration` waits for it, so the connection's unregister cannot run first.
   */
  trackRegistration(write: Promise<void>): void {
    this.#registryWrite = write;
    const settled = (): void => {
      if (this.#registryWrite === write) this.#registryWrite = undefined;
    };
    void write.then(settled, settled);
  }

  /** Resolves once no registry write of this connection is in flight. */
  afterRegistration(): Promise<void> {
    return this.#registryWrite ?? Promise.resolve();
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
    this.#activeAfterMs = Date.now() - this.connectedAt;
  }

  sentMessage(id: string): SentMessage | undefined {
    return this.#sent?.get(id);
  }

  /** Remembers `id` as the newest of at most `window` ids. */
  rememberSent(id: string, entry: SentMessage, window: number): void {
    const sent = (this.#sent ??= new Map());
    sent.delete(id);
    sent.set(id, entry);
    // Map iteration order is insertion order, so the first key is the oldest.
    while (sent.size > window) {
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
