import { SignJWT } from 'jose';
import { io, type Socket } from 'socket.io-client';
import type { ConnectionServer } from '@pushline/connection-server';
import { DeviceEvents, DeviceMessage } from '@pushline/protocol';
import type { DeviceRegistry } from '@pushline/registry';
import { waitUntil, within } from '@pushline/testkit';

/** How a test device answers `message`. */
export type DeviceBehaviour = 'ack' | 'reject' | 'silent' | 'disconnect';

/** A real socket.io-client device that records what it receives and answers as told. */
export interface TestDevice {
  readonly id: string;
  readonly userId: string;
  readonly socket: Socket;
  readonly received: DeviceMessage[];
  behaviour: DeviceBehaviour;
  /** Resolves with the next message this device receives (default deadline 10 s). */
  nextMessage(timeoutMs?: number): Promise<DeviceMessage>;
  /** Emits with an ack and resolves with the ack. */
  request(event: string, body: unknown, timeoutMs?: number): Promise<unknown>;
}

export interface ConnectDeviceOptions {
  /** An in-process server, or where a server process listens (its id and device URL). */
  readonly server: Pick<ConnectionServer, 'serverId' | 'deviceUrl'>;
  /** Where the device's registration is awaited. */
  readonly registry: DeviceRegistry;
  /** HS256 secret the server verifies device tokens with. */
  readonly jwtSecret: string;
  readonly deviceId: string;
  readonly userId: string;
  /** Default 'ack'. */
  readonly behaviour?: DeviceBehaviour;
  readonly claims?: { topics?: string[] };
  /** Gets the socket before it connects, so the caller can disconnect it even when connecting fails. */
  readonly track: (socket: Socket) => void;
}

/** Connects a device with a signed token and resolves once the registry points at its server. */
export async function connectDevice(options: ConnectDeviceOptions): Promise<TestDevice> {
  const { server, deviceId, userId } = options;
  const token = await new SignJWT({ uid: userId, ...options.claims })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(deviceId)
    .setExpirationTime('10m')
    .sign(new TextEncoder().encode(options.jwtSecret));
  const socket = io(server.deviceUrl, { transports: ['websocket'], reconnection: false, auth: { token } });
  options.track(socket);
  const received: DeviceMessage[] = [];
  const waiters: ((m: DeviceMessage) => void)[] = [];
  const device: TestDevice = {
    id: deviceId,
    userId,
    socket,
    received,
    behaviour: options.behaviour ?? 'ack',
    nextMessage: (timeoutMs = 10_000) =>
      within(
        new Promise<DeviceMessage>((resolve) => waiters.push(resolve)),
        timeoutMs,
        `a message for ${deviceId}`,
      ),
    request: (event, body, timeoutMs = 5_000) =>
      within(
        socket.timeout(timeoutMs).emitWithAck(event, body) as Promise<unknown>,
        timeoutMs + 500,
        `ack of ${event}`,
      ),
  };
  socket.on(DeviceEvents.message, (raw: unknown, ack: (answer: unknown) => void) => {
    const msg = DeviceMessage.parse(raw);
    received.push(msg);
    for (const w of waiters.splice(0)) w(msg);
    switch (device.behaviour) {
      case 'ack':
        return ack({ ok: true });
      case 'reject':
        return ack({ ok: false, reason: 'muted' });
      case 'silent':
        return;
      case 'disconnect':
        socket.disconnect();
        return;
    }
  });
  await within(
    new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', (err) => reject(err));
    }),
    5_000,
    `${deviceId} to connect`,
  );
  await waitUntil(async () => (await options.registry.lookup(deviceId))?.serverId === server.serverId, {
    what: `${deviceId} registered on ${server.serverId}`,
  });
  return device;
}
