import { Decoder, Encoder, PacketType } from 'socket.io-parser';

/** A frame outside the device protocol; socket.io closes the connection on it (`parse error`). */
class DeviceFrameError extends Error {
  override readonly name = 'DeviceFrameError';
}

const BINARY_TYPES: ReadonlySet<number> = new Set([PacketType.BINARY_EVENT, PacketType.BINARY_ACK]);

/**
 * socket.io's packet decoder, refusing binary packets before it reads them. The device protocol is
 * JSON only, and a binary packet is the one socket.io rebuilds with a recursive walk (its JSON part
 * is walked to put the attachments in place): a 64 KiB frame of nested arrays overflows the stack
 * there. Text packets are parsed by `JSON.parse`, which does not recurse, and their depth is
 * bounded per request (requests.ts) before anything walks them.
 */
class DeviceFrameDecoder extends Decoder {
  override add(frame: unknown): void {
    if (typeof frame !== 'string')
      throw new DeviceFrameError('binary frames are not part of the device protocol');
    if (BINARY_TYPES.has(frame.charCodeAt(0) - 48)) {
      throw new DeviceFrameError('binary packets are not part of the device protocol');
    }
    super.add(frame);
  }
}

/** The `parser` option of the device-facing socket.io server. */
export const deviceFrameParser = { Encoder, Decoder: DeviceFrameDecoder };
