import type { DisconnectReason, ReconnectHint } from '@pushline/protocol';
import type { DeviceConnection } from './connection.ts';
import type { ConnectionServerMetrics } from './metrics.ts';

/**
 * Closes connections the polite way (Zuul Push's go-away): a `reconnect_hint` first, then the
 * socket after a grace period. Every timer it starts is tracked, so close() leaves none behind.
 */
export class GracefulCloser {
  readonly #metrics: ConnectionServerMetrics;
  readonly #timers = new Set<NodeJS.Timeout>();

  constructor(metrics: ConnectionServerMetrics) {
    this.#metrics = metrics;
  }

  /**
   * Sends `hint` and closes the socket after `graceMs` (at once when 0). A connection already
   * being closed keeps its first reason and schedule.
   */
  closeAfterHint(
    conn: DeviceConnection,
    hint: ReconnectHint,
    reason: DisconnectReason,
    graceMs: number,
  ): void {
    if (conn.closed || conn.closeReason !== undefined) return;
    conn.closeReason = reason;
    conn.hint(hint);
    this.#metrics.reconnectHints.inc({ reason: hint.reason });
    if (graceMs <= 0) {
      conn.disconnect(reason);
      return;
    }
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      conn.disconnect(reason);
    }, graceMs);
    this.#timers.add(timer);
    conn.onClose(() => {
      clearTimeout(timer);
      this.#timers.delete(timer);
    });
  }

  /**
   * Shutdown drain: every connection is told to reconnect after a random delay within
   * `windowMs` (spreading the herd over the other servers), and closed after `graceMs`.
   */
  drain(conns: Iterable<DeviceConnection>, windowMs: number, graceMs: number): number {
    let hinted = 0;
    for (const conn of conns) {
      if (conn.closed) continue;
      const afterMs = Math.floor(Math.random() * (windowMs + 1));
      if (conn.closeReason === undefined) hinted++;
      this.closeAfterHint(conn, { reason: 'server_shutdown', afterMs }, 'server_shutdown', graceMs);
    }
    return hinted;
  }

  /** Closes at once whatever is still open (the bound of the drain). */
  closeAll(conns: Iterable<DeviceConnection>, reason: DisconnectReason): void {
    for (const conn of [...conns]) conn.disconnect(reason);
  }

  clear(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }
}
