import { SignJWT } from 'jose';

/** Signs HS256 device tokens the way a customer backend would, with the claims the connection-server expects. */
export class DeviceTokenSigner {
  readonly #key: Uint8Array;
  readonly #ttlS: number;

  /** @param ttlS token lifetime; default one hour, longer than any bench run. */
  constructor(secret: string, ttlS = 3600) {
    this.#key = new TextEncoder().encode(secret);
    this.#ttlS = ttlS;
  }

  sign(deviceId: string, userId: string): Promise<string> {
    // The topics claim grants the bench's fan-out topics (the connection-server's default policy).
    return new SignJWT({ uid: userId, topics: ['bench.*'] })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(deviceId)
      .setExpirationTime(Math.floor(Date.now() / 1000) + this.#ttlS)
      .sign(this.#key);
  }

  async signMany(devices: readonly BenchDevice[]): Promise<DeviceCredential[]> {
    return Promise.all(devices.map(async (d) => ({ ...d, token: await this.sign(d.id, d.userId) })));
  }
}

export interface BenchDevice {
  readonly id: string;
  readonly userId: string;
}

export interface DeviceCredential extends BenchDevice {
  readonly token: string;
}

/**
 * Device ids unique per scenario and target, so registry state from one scenario never leaks
 * into another. Devices 2k and 2k+1 share a user, which the default d2d policy (same-user) needs.
 */
export function benchDevices(label: string, count: number, offset = 0): BenchDevice[] {
  return Array.from({ length: count }, (_, k) => {
    const i = k + offset;
    return { id: `bench-${label}-d${i}`, userId: `bench-${label}-u${i >> 1}` };
  });
}
