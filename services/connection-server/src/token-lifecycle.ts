import {
  DeviceEvents,
  RefreshTokenRequest,
  type RefreshTokenAck,
  type TokenExpiring,
} from '@pushline/protocol';
import type { Logger } from '@pushline/telemetry';
import { AuthError, type TokenVerifier } from './auth.ts';
import type { DeviceConnection } from './connection.ts';
import type { LocalDevices } from './local-devices.ts';
import type { ConnectionServerMetrics } from './metrics.ts';
import { errorAck } from './subscriptions.ts';

export interface TokenLifecycleOptions {
  readonly devices: LocalDevices;
  /** PUSHLINE_TOKEN_REFRESH_LEAD_S in ms: how long before `exp` the device is warned. */
  readonly leadMs: number;
  /** PUSHLINE_DEVICE_JWT_CLOCK_TOLERANCE_S in ms: a token counts as expired this long after `exp`, as at the handshake. */
  readonly toleranceMs: number;
  /** Ends a connection whose token expired (reconnect hint `token_expired`, then close). */
  readonly expire: (conn: DeviceConnection) => void;
  /** Leaves the topics a refreshed token no longer allows. */
  readonly prune: (conn: DeviceConnection) => Promise<number>;
  readonly metrics: ConnectionServerMetrics;
  readonly logger: Logger;
  /** Period of the expiry sweep. Default 1000 ms. */
  readonly sweepMs?: number;
}

/**
 * A token is checked for the whole connection, not only at the handshake: `PUSHLINE_TOKEN_REFRESH_LEAD_S`
 * before `exp` the device gets `token_expiring`, and it can send a fresh token with `refresh_token`
 * (verified like a handshake token, and for the same device, user and tenant). A connection whose
 * token is past `exp` (plus the clock tolerance) gets `reconnect_hint` `token_expired` and is closed.
 * One sweep a second over the connections, like the lifetime sweep: no timer per connection.
 */
export class TokenLifecycle {
  readonly #options: TokenLifecycleOptions;
  #verifier: TokenVerifier | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: TokenLifecycleOptions) {
    this.#options = options;
  }

  start(verifier: TokenVerifier): void {
    this.#verifier = verifier;
    this.#timer = setInterval(() => this.sweep(), this.#options.sweepMs ?? 1_000);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Warns the connections whose token expires within the lead, and ends those whose token has expired. */
  sweep(now = Date.now()): void {
    const { leadMs, toleranceMs, metrics } = this.#options;
    for (const conn of this.#options.devices.values()) {
      if (conn.closed || conn.closeReason !== undefined) continue;
      const expiresAt = conn.claims.exp * 1000;
      const disconnectAt = expiresAt + toleranceMs;
      try {
        if (now >= disconnectAt) {
          metrics.tokenLifecycle.inc({ event: 'expired' });
          this.#options.expire(conn);
        } else if (!conn.tokenWarned && now >= expiresAt - leadMs) {
          conn.markTokenWarned();
          const notice: TokenExpiring = { expiresAt, disconnectAt };
          conn.socket.emit(DeviceEvents.tokenExpiring, notice);
          metrics.tokenLifecycle.inc({ event: 'expiring' });
        }
      } catch (err) {
        metrics.loopFailures.inc({ loop: 'token_expiry' });
        this.#options.logger.error({ err, deviceId: conn.deviceId }, 'token expiry check failed');
      }
    }
    metrics.loopRuns.inc({ loop: 'token_expiry' });
  }

  /** `refresh_token`: takes a fresh token for the connection, or says why not. */
  async refresh(conn: DeviceConnection, raw: unknown): Promise<RefreshTokenAck> {
    const ack = await this.#refresh(conn, raw);
    this.#options.metrics.tokenLifecycle.inc({ event: ack.ok ? 'refreshed' : 'refresh_rejected' });
    return ack;
  }

  async #refresh(conn: DeviceConnection, raw: unknown): Promise<RefreshTokenAck> {
    const req = RefreshTokenRequest.safeParse(raw);
    if (!req.success) return errorAck('invalid_request', 'refresh_token takes { token: <JWT> }');
    const verifier = this.#verifier;
    if (!verifier) return errorAck('internal', 'server is not ready; retry later');
    let claims;
    try {
      claims = await verifier.verify(req.data.token);
    } catch (err) {
      if (err instanceof AuthError) return errorAck('token_rejected', err.message, err.code);
      throw err;
    }
    if (claims.sub !== conn.deviceId || claims.uid !== conn.userId || claims.tid !== conn.tenantId) {
      return errorAck(
        'token_rejected',
        'the fresh token must name the same device, user and tenant (sub, uid, tid)',
        'token_invalid_claims',
      );
    }
    conn.replaceClaims(claims);
    await this.#options.prune(conn);
    return { ok: true, expiresAt: claims.exp * 1000 };
  }
}
