/**
 * Compares the socket.io Redis adapters for topic broadcasts across two servers
 * (docs/decisions/0007-socketio-adapter.md). Run: node services/connection-server/bench/adapter-fanout.ts
 *
 * Two socket.io servers in this process, DEVICES websocket clients split over them, TOPICS rooms
 * whose subscribers all sit on one server (topic t on server t % 2), like screens that only some
 * servers' devices have open. For each adapter it measures acked broadcasts (what the platform's
 * broadcast endpoint does) and plain broadcasts, and counts the pub/sub messages each server's
 * subscriber connection received.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { startRedis } from '@pushline/devstack';
import { createAdapter, createShardedAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { io as connect, type Socket as ClientSocket } from 'socket.io-client';

const DEVICES = Number(process.env['DEVICES'] ?? 400);
const TOPICS = Number(process.env['TOPICS'] ?? 100);
const ACKED = Number(process.env['ACKED'] ?? 2000);
const PLAIN = Number(process.env['PLAIN'] ?? 10000);
const CONCURRENCY = 50;

type Mode = 'classic' | 'sharded-static' | 'sharded-dynamic';

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

async function run(redisUrl: string, mode: Mode) {
  const clients: Redis[] = [];
  const servers: Server[] = [];
  const received: [number, number] = [0, 0];
  for (let i = 0; i < 2; i++) {
    const pub = new Redis(redisUrl);
    const sub = new Redis(redisUrl);
    clients.push(pub, sub);
    const count = () => {
      received[i === 0 ? 0 : 1]++;
    };
    sub.on('messageBuffer', count);
    sub.on('pmessageBuffer', count);
    sub.on('smessageBuffer', count);
    const http = createServer();
    const server = new Server(http, { transports: ['websocket'], serveClient: false });
    const prefix = `bench-${mode}`;
    server.adapter(
      mode === 'classic'
        ? createAdapter(pub, sub, { key: prefix })
        : createShardedAdapter(pub, sub, {
            channelPrefix: prefix,
            subscriptionMode: mode === 'sharded-dynamic' ? 'dynamic' : 'static',
          }),
    );
    server.on('connection', (socket) => {
      void socket.join(`topic:${String(socket.handshake.auth['topic'])}`);
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    await Promise.all([pub.ping(), sub.ping()]);
    servers.push(server);
  }
  const [serverA, serverB] = servers;
  if (!serverA || !serverB) throw new Error('two servers expected');
  const urls = servers.map((s) => {
    const addr = (s.httpServer as unknown as { address(): AddressInfo }).address();
    return `http://127.0.0.1:${addr.port}`;
  });

  let plainSeen = 0;
  const devices: ClientSocket[] = [];
  for (let d = 0; d < DEVICES; d++) {
    const topic = d % TOPICS;
    const socket = connect(urls[topic % 2] ?? '', {
      transports: ['websocket'],
      reconnection: false,
      auth: { topic },
    });
    socket.on('msg', (_m: unknown, ack?: (a: unknown) => void) => {
      if (ack) ack({ ok: true });
      else plainSeen++;
    });
    devices.push(socket);
  }
  await Promise.all(
    devices.map((s) => new Promise((resolve) => s.once('connect', () => resolve(undefined)))),
  );
  // Let dynamic subscriptions (one per room) reach Redis.
  await Promise.all(clients.map((c) => c.ping()));
  received[0] = 0;
  received[1] = 0;

  // Acked broadcasts, always started on server 0.
  const latencies: number[] = [];
  let next = 0;
  const ackStart = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < ACKED) {
        const topic = next++ % TOPICS;
        const t0 = performance.now();
        await serverA.to(`topic:${topic}`).timeout(5000).emitWithAck('msg', { n: topic });
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const ackSeconds = (performance.now() - ackStart) / 1000;
  const ackedReceived = [...received];
  received[0] = 0;
  received[1] = 0;

  // Plain broadcasts (no ack), started on server 0; wait until every subscriber got its copies.
  const perTopic = DEVICES / TOPICS;
  const plainStart = performance.now();
  for (let i = 0; i < PLAIN; i++) serverA.to(`topic:${i % TOPICS}`).emit('msg', { n: i });
  const expected = PLAIN * perTopic;
  while (plainSeen < expected) await new Promise((resolve) => setTimeout(resolve, 5));
  const plainSeconds = (performance.now() - plainStart) / 1000;

  latencies.sort((a, b) => a - b);
  const result = {
    mode,
    acked: {
      perSecond: Math.round(ACKED / ackSeconds),
      p50ms: +pct(latencies, 50).toFixed(2),
      p99ms: +pct(latencies, 99).toFixed(2),
      pubsubMessagesAtServerB: ackedReceived[1],
    },
    plain: {
      perSecond: Math.round(PLAIN / plainSeconds),
      pubsubMessagesAtServerB: received[1],
      pubsubMessagesAtServerA: received[0],
    },
  };
  for (const d of devices) d.disconnect();
  await Promise.all(servers.map((s) => s.close()));
  await Promise.all(clients.map((c) => c.quit()));
  return result;
}

const redis = await startRedis();
try {
  console.log(JSON.stringify({ devices: DEVICES, topics: TOPICS, acked: ACKED, plain: PLAIN }));
  for (const mode of ['classic', 'sharded-static', 'sharded-dynamic'] as const) {
    console.log(JSON.stringify(await run(redis.url, mode)));
  }
} finally {
  await redis.stop();
}
