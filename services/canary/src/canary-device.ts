import { performance } from 'node:perf_hooks';
import { io, type Socket } from 'socket.io-client';
import { DeviceEvents, DeviceMessage } from '@pushline/protocol';
import { backoffMs } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';

export interface CanaryDeviceOptions {
  readonly serverId: string;
  /** The server's own device URL, from its load report (not a load balancer's). */
  readonly deviceUrl: string;
  readonly deviceId: string;
  /** A fresh token for each connect (connections are recycled, tokens expire). */
  readonly token: () => Promise<string>;
  readonly logger: Logger;
  /** Called with true on connect and false on disconnect. */
  readonly onConnection: (connected: boolean) => void;
}

/** The payload of every canary message: which probe it belongs to. */
export interface CanaryPayload {
  readonly canary: string;
}

interface Waiter {
  /** `undefined`: the message will not come (timeout or close). */
  readonly finish: (receivedAt: number | undefined) => void;
}

/**
 * One socket.io-client device pinned to one connection server. It acks every message and tells
 * the probe that expects it when it arrived. It reconnects to the same server whatever closed
 * the connection (a reconnect hint, a recycled connection, a crash), until it is closed.
 */
export class CanaryDevice {
  readonly serverId: string;
  readonly deviceUrl: string;
  readonly #socket: Socket;
  readonly #waiters = new Map<string, Waiter>();
  #retryTimer: NodeJS.Timeout | undefined;
  #attempts = 0;
  #closed = false;

  constructor(options: CanaryDeviceOptions) {
    this.serverId = options.serverId;
    this.deviceUrl = options.deviceUrl;
    this.#socket = io(options.deviceUrl, {
      transports: ['websocket'],
      autoConnect: false,
      reconnectionDelay: 250,
      reconnectionDelayMax: 2_000,
      auth: (cb) => {
        options.token().then(
          (token) => cb({ token }),
          (err: unknown) => {
            options.logger.error({ err, serverId: options.serverId }, 'canary could not sign its token');
            cb({});
          },
        );
      },
    });
    this.#socket.on('connect', () => {
      this.#attempts = 0;
      options.onConnection(true);
    });
    this.#socket.on('disconnect', () => {
      options.onConnection(false);
      // socket.io reconnects by itself after a transport loss, not after the server closed us.
      if (!this.#socket.active) this.#retry();
    });
    this.#socket.on('connect_error', (err: Error) => {
      options.logger.debug({ err, serverId: options.serverId }, 'canary device could not connect');
      // A refused handshake (draining, busy, bad token) is final for socket.io; we keep trying.
      if (!this.#socket.active) this.#retry();
    });
    this.#socket.on(DeviceEvents.message, (raw: unknown, ack?: (answer: unknown) => void) => {
      const receivedAt = performance.now();
      if (typeof ack === 'function') ack({ ok: true });
      const parsed = DeviceMessage.safeParse(raw);
      const probe = parsed.success ? probeIdOf(parsed.data.payload) : undefined;
      if (probe === undefined) return;
      this.#waiters.get(probe)?.finish(receivedAt);
    });
  }

  get connected(): boolean {
    return this.#socket.connected;
  }

  start(): void {
    this.#socket.connect();
  }

  /**
   * Resolves with the time (performance.now()) the message of `probe` reached the device, or
   * undefined after `timeoutMs`. Register before sending: the message may arrive before the
   * API answers.
   */
  expect(probe: string, timeoutMs: number): Promise<number | undefined> {
    return new Promise((resolve) => {
      const finish = (at: number | undefined) => {
        clearTimeout(timer);
        this.#waiters.delete(probe);
        resolve(at);
      };
      const timer = setTimeout(() => finish(undefined), timeoutMs);
      this.#waiters.set(probe, { finish });
    });
  }

  /** Disconnects for good; pending probes resolve as not received. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#socket.disconnect();
    this.#socket.removeAllListeners();
    for (const waiter of [...this.#waiters.values()]) waiter.finish(undefined);
  }

  #retry(): void {
    if (this.#closed || this.#retryTimer) return;
    this.#attempts++;
    this.#retryTimer = setTimeout(
      () => {
        this.#retryTimer = undefined;
        if (!this.#closed && !this.#socket.connected && !this.#socket.active) this.#socket.connect();
      },
      250 + backoffMs(this.#attempts, 250, 5_000),
    );
  }
}

function probeIdOf(payload: unknown): string | undefined {
  if (typeof payload !== 'object' || payload === null) return undefined;
  const probe = (payload as Partial<CanaryPayload>).canary;
  return typeof probe === 'string' ? probe : undefined;
}
