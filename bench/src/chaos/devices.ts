import { SignJWT } from 'jose';
import { io, type Socket } from 'socket.io-client';
import { DeviceEvents, ReconnectHint } from '@pushline/protocol';
import { forEachLimited, increment } from '../load/pool.ts';

/** The topic every chaos device subscribes to after each connect (its token allows `chaos.*`). */
export const CHAOS_TOPIC = 'chaos.news';

export interface ServerAddress {
  readonly serverId: string;
  readonly deviceUrl: string;
}

/** One connection of a device, from the accepted handshake to its close. */
export interface ConnectionSpan {
  readonly serverId: string;
  readonly connectedAt: number;
  /** When the topic subscription was acked on this connection. */
  subscribedAt: number | undefined;
  closedAt: number | undefined;
  closeReason: string | undefined;
}

export interface Receipt {
  count: number;
  readonly firstAt: number;
  readonly serverId: string;
}

export interface DeviceCounters {
  readonly duplicates: number;
  readonly hints: Readonly<Record<string, number>>;
  readonly connectErrors: Readonly<Record<string, number>>;
}

/**
 * A socket.io-client device as docs/protocol.md asks a client to behave: it acks every message,
 * remembers the ids it has seen across reconnects and acks a repeated one without handling it
 * again (counting it as a duplicate), subscribes again after every connect, follows reconnect
 * hints, and otherwise reconnects with exponential backoff and full jitter. Its "load balancer"
 * is a random pick among all servers, so after a crash it lands on a live one eventually.
 */
export class ChaosDevice {
  readonly id: string;
  readonly userId: string;
  readonly receipts = new Map<string, Receipt>();
  readonly connections: ConnectionSpan[] = [];
  #duplicates = 0;
  readonly #hints: Record<string, number> = {};
  readonly #connectErrors: Record<string, number> = {};
  readonly #servers: readonly ServerAddress[];
  readonly #secret: Uint8Array;
  readonly #backoff: { baseMs: number; capMs: number };
  #socket: Socket | undefined;
  #current: ConnectionSpan | undefined;
  #hint: { at: number; afterMs: number } | undefined;
  #retry: NodeJS.Timeout | undefined;
  #connecting: Promise<boolean> | undefined;
  #attempt = 0;
  /** False once the harness closed the device, or while it moves it on purpose. */
  #autoReconnect = true;
  #closed = false;

  constructor(o: {
    id: string;
    userId: string;
    servers: readonly ServerAddress[];
    jwtSecret: string;
    backoff: { baseMs: number; capMs: number };
  }) {
    this.id = o.id;
    this.userId = o.userId;
    this.#servers = o.servers;
    this.#secret = new TextEncoder().encode(o.jwtSecret);
    this.#backoff = o.backoff;
  }

  get connected(): boolean {
    return this.#current !== undefined && this.#socket?.connected === true;
  }

  /** Server of the live connection, if any. */
  get serverId(): string | undefined {
    return this.connected ? this.#current?.serverId : undefined;
  }

  get counters(): DeviceCounters {
    return {
      duplicates: this.#duplicates,
      hints: { ...this.#hints },
      connectErrors: { ...this.#connectErrors },
    };
  }

  /** Connects to `server` (or a random one); resolves whether the handshake was accepted. */
  async connect(server?: ServerAddress): Promise<boolean> {
    // One attempt at a time: a second socket for the same device would replace the first.
    while (this.#connecting) await this.#connecting;
    if (this.#closed) return false;
    if (this.connected && (server === undefined || this.serverId === server.serverId)) return true;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    this.#autoReconnect = true;
    const attempt = this.#attemptConnect(server ?? this.#pick());
    this.#connecting = attempt;
    try {
      return await attempt;
    } finally {
      this.#connecting = undefined;
    }
  }

  async #attemptConnect(target: ServerAddress): Promise<boolean> {
    const token = await new SignJWT({ uid: this.userId, topics: ['chaos.*'] })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(this.id)
      .setExpirationTime('4h')
      .sign(this.#secret);
    const socket = io(target.deviceUrl, {
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      timeout: 5000,
      auth: { token },
    });
    this.#socket = socket;
    socket.on(DeviceEvents.message, (raw: unknown, ack?: (answer: unknown) => void) =>
      this.#onMessage(raw, ack),
    );
    socket.on(DeviceEvents.reconnect, (raw: unknown) => {
      const hint = ReconnectHint.safeParse(raw);
      if (!hint.success) return;
      increment(this.#hints, hint.data.reason);
      this.#hint = { at: Date.now(), afterMs: hint.data.afterMs };
    });
    const accepted = await new Promise<boolean>((resolve) => {
      const settle = (ok: boolean, error?: string) => {
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('connect_error', onError);
        socket.off('disconnect', onClosed);
        if (error !== undefined) increment(this.#connectErrors, error);
        resolve(ok);
      };
      const onConnect = () => settle(true);
      const onError = (err: Error) => settle(false, err.message);
      // A transport that opens and then closes before the CONNECT answer ends in `disconnect`,
      // not `connect_error` (a server exiting mid-handshake).
      const onClosed = (reason: string) => settle(false, `closed during the handshake: ${reason}`);
      const timer = setTimeout(() => settle(false, 'no handshake answer within 10 s'), 10_000);
      socket.once('connect', onConnect);
      socket.once('connect_error', onError);
      socket.once('disconnect', onClosed);
    });
    if (!accepted || this.#closed) {
      socket.removeAllListeners();
      socket.disconnect();
      if (this.#socket === socket) this.#socket = undefined;
      if (!this.#closed && this.#autoReconnect) this.#scheduleReconnect(false);
      return false;
    }
    this.#attempt = 0;
    const span: ConnectionSpan = {
      serverId: target.serverId,
      connectedAt: Date.now(),
      subscribedAt: undefined,
      closedAt: undefined,
      closeReason: undefined,
    };
    this.#current = span;
    this.connections.push(span);
    socket.once('disconnect', (reason: string) => {
      span.closedAt = Date.now();
      span.closeReason = reason;
      if (this.#current === span) this.#current = undefined;
      socket.removeAllListeners();
      const stillCurrent = this.#socket === socket;
      if (stillCurrent) this.#socket = undefined;
      if (stillCurrent && reason !== 'io client disconnect' && this.#autoReconnect && !this.#closed)
        this.#scheduleReconnect(true);
    });
    void this.#subscribe(socket, span);
    return true;
  }

  /** Closes the connection on the client side; the device does not reconnect by itself. */
  async disconnect(): Promise<void> {
    this.#autoReconnect = false;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    while (this.#connecting) await this.#connecting;
    const socket = this.#socket;
    if (!socket?.connected) return;
    await new Promise<void>((resolve) => {
      socket.once('disconnect', () => resolve());
      socket.disconnect();
    });
  }

  /** One line on the device's state, for reports about devices that did not come back. */
  describe(): string {
    const last = this.connections[this.connections.length - 1];
    const errors = Object.entries(this.#connectErrors)
      .map(([k, n]) => `${k} ×${n}`)
      .join(', ');
    return `${this.id}: ${this.connected ? `connected to ${this.serverId}` : 'not connected'}; last connection ${last ? `${last.serverId}, closed ${last.closeReason ?? '-'}` : 'none'}; reconnect ${this.#connecting ? 'in progress' : this.#retry ? 'scheduled' : 'not scheduled'}${errors ? `; connect errors: ${errors}` : ''}`;
  }

  close(): void {
    this.#closed = true;
    this.#autoReconnect = false;
    clearTimeout(this.#retry);
    this.#socket?.removeAllListeners();
    this.#socket?.disconnect();
  }

  /** Whether one connection covered the whole window (and, with `subscribed`, its subscription too). */
  stayedConnected(from: number, to: number, subscribed = false): boolean {
    return this.connections.some(
      (c) =>
        c.connectedAt <= from &&
        (c.closedAt === undefined || c.closedAt >= to) &&
        (!subscribed || (c.subscribedAt !== undefined && c.subscribedAt <= from)),
    );
  }

  async #subscribe(socket: Socket, span: ConnectionSpan): Promise<void> {
    try {
      const ack = (await socket
        .timeout(5000)
        .emitWithAck(DeviceEvents.subscribe, { topic: CHAOS_TOPIC })) as {
        ok?: unknown;
      };
      if (ack.ok === true) span.subscribedAt = Date.now();
    } catch {
      // No ack (the connection died): the next connection subscribes again.
    }
  }

  #onMessage(raw: unknown, ack: ((answer: unknown) => void) | undefined): void {
    const id = typeof raw === 'object' && raw !== null ? (raw as { id?: unknown }).id : undefined;
    if (typeof id === 'string') {
      const seen = this.receipts.get(id);
      if (seen) {
        seen.count++;
        this.#duplicates++;
      } else {
        this.receipts.set(id, { count: 1, firstAt: Date.now(), serverId: this.#current?.serverId ?? '?' });
      }
    }
    ack?.({ ok: true });
  }

  #scheduleReconnect(afterConnection: boolean): void {
    clearTimeout(this.#retry);
    let delayMs: number;
    const hint = this.#hint;
    if (afterConnection && hint) {
      // docs/protocol.md §5: wait afterMs from receiving the hint, not from the close.
      delayMs = Math.max(0, hint.at + hint.afterMs - Date.now());
      this.#hint = undefined;
    } else {
      const ceiling = Math.min(this.#backoff.capMs, this.#backoff.baseMs * 2 ** this.#attempt);
      delayMs = Math.random() * ceiling;
      this.#attempt++;
    }
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      void this.connect();
    }, delayMs);
  }

  #pick(): ServerAddress {
    return this.#servers[Math.floor(Math.random() * this.#servers.length)] as ServerAddress;
  }
}

/** The suite's devices: two per user, so user targets fan out to two devices. */
export class ChaosFleet {
  readonly devices: ChaosDevice[];
  readonly byId: Map<string, ChaosDevice>;
  readonly users: Map<string, string[]>;

  constructor(o: {
    run: string;
    count: number;
    servers: readonly ServerAddress[];
    jwtSecret: string;
    backoff: { baseMs: number; capMs: number };
  }) {
    this.devices = Array.from(
      { length: o.count },
      (_, i) =>
        new ChaosDevice({
          id: `chaos-${o.run}-d${i}`,
          userId: `chaos-${o.run}-u${i >> 1}`,
          servers: o.servers,
          jwtSecret: o.jwtSecret,
          backoff: o.backoff,
        }),
    );
    this.byId = new Map(this.devices.map((d) => [d.id, d]));
    this.users = new Map();
    for (const d of this.devices) this.users.set(d.userId, [...(this.users.get(d.userId) ?? []), d.id]);
  }

  connectedCount(): number {
    return this.devices.filter((d) => d.connected).length;
  }

  /** Connects every device not connected, device k to servers[k % n] (or all to `only`). */
  async connectAll(servers: readonly ServerAddress[], only?: ServerAddress): Promise<void> {
    const pending = this.devices.filter((d) => !d.connected);
    await forEachLimited(pending, 20, async (d) => {
      await d.connect(only ?? servers[this.devices.indexOf(d) % servers.length]);
    });
  }

  /** Moves `devices` to `server`: a client-side disconnect, then a connect there. */
  async move(devices: readonly ChaosDevice[], server: ServerAddress): Promise<void> {
    await forEachLimited(devices, 20, async (d) => {
      await d.disconnect();
      await d.connect(server);
    });
  }

  close(): void {
    for (const d of this.devices) d.close();
  }
}
