import type { DeviceConnection } from './connection.ts';

/**
 * This server's in-memory map from device id to its connection (the local half of the
 * registry). One connection per device: the newest wins.
 */
export class LocalDevices {
  readonly #byDevice = new Map<string, DeviceConnection>();

  get size(): number {
    return this.#byDevice.size;
  }

  get(deviceId: string): DeviceConnection | undefined {
    return this.#byDevice.get(deviceId);
  }

  /** Makes `conn` the device's connection; returns the one it replaced, which the caller closes. */
  add(conn: DeviceConnection): DeviceConnection | undefined {
    const previous = this.#byDevice.get(conn.deviceId);
    this.#byDevice.set(conn.deviceId, conn);
    return previous === conn ? undefined : previous;
  }

  /** Removes `conn` only if it is still the device's connection (a newer one may have replaced it). */
  remove(conn: DeviceConnection): boolean {
    if (this.#byDevice.get(conn.deviceId) !== conn) return false;
    this.#byDevice.delete(conn.deviceId);
    return true;
  }

  values(): IterableIterator<DeviceConnection> {
    return this.#byDevice.values();
  }
}
