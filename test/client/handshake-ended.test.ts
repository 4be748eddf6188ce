import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Server } from 'socket.io';
import { PushlineClient, type DisconnectInfo } from '@pushline/client';
import { within } from '@pushline/testkit';

/**
 * A server can end a connection after the websocket opened and before it answers socket.io's
 * CONNECT: an overloaded connection server timing out a handshake, as the survivors of a reconnect
 * storm do. socket.io-client then reports a `disconnect` and no `connect_error`. The SDK must take
 * it as a failed attempt and try again; the bench's raw client once waited for ever there, which
 * the storm scenario counted as lost devices.
 */
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const close of closers.splice(0)) await close();
});

test('an attempt the server ends before CONNECT is retried until one gets in', async () => {
  const http = createServer();
  const io = new Server(http, { transports: ['websocket'] });
  let ended = 0;
  io.use((socket, next) => {
    if (ended < 2) {
      ended++;
      socket.conn.close();
      return;
    }
    next();
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  closers.push(async () => {
    await io.close();
  });
  const { port } = http.address() as AddressInfo;

  const client = new PushlineClient({
    url: `http://127.0.0.1:${port}`,
    token: () => 'a token this server does not check',
    reconnect: { initialDelayMs: 20, maxDelayMs: 100 },
  });
  closers.push(() => Promise.resolve(client.close()));
  const disconnects: DisconnectInfo[] = [];
  client.on('disconnected', (info) => disconnects.push(info));
  client.connect();
  await within(client.whenConnected(), 10_000, 'connected after two ended attempts');

  assert.equal(ended, 2);
  assert.equal(client.state, 'connected');
  assert.deepEqual(
    disconnects.map((d) => [d.reason, d.willReconnect]),
    [
      ['transport close', true],
      ['transport close', true],
    ],
  );
});
