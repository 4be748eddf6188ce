import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Server } from 'socket.io';
import { DeviceFleet } from '@pushline/bench';

/**
 * The bench's load generators stand in for devices, so a device that stops trying counts as lost.
 * A server that ends a connection after the websocket opened and before it answers socket.io's
 * CONNECT (what an overloaded survivor of a reconnect storm does to a handshake it timed out)
 * leaves socket.io-client with a `disconnect` and no `connect_error`: the attempt must fail, be
 * counted, and let the device try again, never wait for ever.
 */
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

/** A real socket.io server that ends every connection before answering CONNECT. */
async function serverEndingHandshakes(): Promise<{ url: string; ended: () => number }> {
  const http = createServer();
  const io = new Server(http, { transports: ['websocket'] });
  let ended = 0;
  io.use((socket) => {
    ended++;
    socket.conn.close();
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  closers.push(async () => {
    await io.close();
  });
  const { port } = http.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, ended: () => ended };
}

function devices(n: number) {
  return Array.from({ length: n }, (_, i) => ({
    id: `fleet-dev-${i}`,
    userId: `fleet-user-${i}`,
    token: 'unused',
  }));
}

test('a connect the server ends before CONNECT fails at once with its reason', async () => {
  const server = await serverEndingHandshakes();
  const fleet = DeviceFleet.create('closed-before-connect', devices(3));
  closers.push(() => fleet.close());
  // Without the fix each attempt waits for ever, and the request to the generator fails at its
  // bound (timeoutMs per wave of devices) instead of answering.
  const result = await fleet.connect({ urls: [server.url], timeoutMs: 2_000 });
  assert.equal(result.connected, 0);
  assert.equal(result.failed, 3);
  assert.deepEqual(Object.keys(result.errors), ['closed before connect: transport close']);
  assert.equal(server.ended(), 3);
});
