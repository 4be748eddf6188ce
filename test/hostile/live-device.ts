import { io, type Socket } from 'socket.io-client';
import { DeviceEvents, DeviceMessage } from '@pushline/protocol';
import { within } from '@pushline/testkit';
import { signToken } from './device-cases.ts';

/** A well-behaved socket.io-client device: acks every message and remembers it by id. */
export class LiveDevice {
  readonly id: string;
  readonly userId: string;
  readonly socket: Socket;
  /** The last message of each id. */
  readonly received = new Map<string, DeviceMessage>();
  /** Every message, in arrival order. */
  readonly messages: DeviceMessage[] = [];
  #waiters: { id: string; resolve: (m: DeviceMessage) => void }[] = [];

  private constructor(socket: Socket, id: string, userId: string) {
    this.socket = socket;
    this.id = id;
    this.userId = userId;
    socket.on(DeviceEvents.message, (raw: unknown, ack: unknown) => {
      const msg = DeviceMessage.parse(raw);
      this.received.set(msg.id, msg);
      this.messages.push(msg);
      for (const w of this.#waiters.filter((w) => w.id === msg.id)) w.resolve(msg);
      this.#waiters = this.#waiters.filter((w) => w.id !== msg.id);
      if (typeof ack === 'function') ack({ ok: true });
    });
  }

  static async connect(
    url: string,
    options: { id: string; userId: string; jwtSecret: string },
  ): Promise<LiveDevice> {
    const token = signToken(
      { alg: 'HS256', typ: 'JWT' },
      { sub: options.id, uid: options.userId, exp: Math.floor(Date.now() / 1000) + 600 },
      options.jwtSecret,
    );
    const socket = io(url, {
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      auth: { token },
    });
    const device = new LiveDevice(socket, options.id, options.userId);
    try {
      await within(
        new Promise<void>((resolve, reject) => {
          socket.once('connect', () => resolve());
          socket.once('connect_error', (err) => reject(err));
        }),
        10_000,
        `${options.id} to connect`,
      );
    } catch (err) {
      socket.disconnect();
      throw err;
    }
    return device;
  }

  /** The message with this id (the next one, when `fresh`), once it arrives; undefined after `timeoutMs`. */
  async waitFor(id: string, timeoutMs: number, fresh = false): Promise<DeviceMessage | undefined> {
    const seen = this.received.get(id);
    if (seen && !fresh) return seen;
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        new Promise<DeviceMessage>((resolve) => this.#waiters.push({ id, resolve })),
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.socket.disconnect();
  }
}
