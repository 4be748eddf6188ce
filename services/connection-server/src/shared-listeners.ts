import type { Socket } from 'socket.io';
import type { DeviceConnection } from './connection.ts';

/*
 * Socket listeners shared by every connection, instead of closures built per socket. Measured by
 * `npm run bench -- --scenarios=1 --heap-snapshot` (bench/results/2026-11-25-3acc88c-s1-n5000.md,
 * 2026-11-25-bd3b6ca-s1-n5000.md); see docs/performance.md, "Shared socket listeners".
 */

const CONNECTION = Symbol('pushline.connection');

/**
 * Keeps `conn` on its socket for the shared listeners. `socket.data` is allocated by socket.io for
 * every socket anyway, and a symbol key is never serialised when another server fetches the socket.
 */
export function attachConnection(socket: Socket, conn: DeviceConnection): void {
  (socket.data as Record<symbol, DeviceConnection>)[CONNECTION] = conn;
}

/** The connection `attachConnection` kept on `socket`; undefined before that. */
function connectionOf(socket: Socket): DeviceConnection | undefined {
  return (socket.data as Record<symbol, DeviceConnection | undefined>)[CONNECTION];
}

/**
 * One listener function for every socket: the emitter calls it with the socket as `this`, and
 * `handle` gets the socket's connection (a socket without one is ignored).
 */
export function sharedSocketListener<A extends unknown[]>(
  handle: (conn: DeviceConnection, ...args: A) => void,
): (this: Socket, ...args: A) => void {
  return function (this: Socket, ...args: A) {
    const conn = connectionOf(this);
    if (conn) handle(conn, ...args);
  };
}
