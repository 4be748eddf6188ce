/**
 * The baseline: what a competent team writes in an afternoon with socket.io and express on one
 * process. No Redis, no Kafka, no registry: the device map is in memory, so a push is a Map
 * lookup and an emitWithAck. It speaks the same device protocol as Pushline (`message`, `send`,
 * `subscribe`, JWT in the handshake), so the same load generators drive both.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { jwtVerify } from 'jose';
import { Server, type Socket } from 'socket.io';

export interface BaselineOptions {
  /** HS256 secret of device tokens. */
  readonly jwtSecret: string;
  /** Default 0: a free port. */
  readonly port?: number;
  /** Time a device has to ack; default 5000 ms, like Pushline's PUSHLINE_DELIVERY_TIMEOUT_MS. */
  readonly ackTimeoutMs?: number;
}

export interface BaselineServer {
  readonly port: number;
  close(): Promise<void>;
}

type Ack = (answer: unknown) => void;

export async function startBaseline(options: BaselineOptions): Promise<BaselineServer> {
  const key = new TextEncoder().encode(options.jwtSecret);
  const ackTimeoutMs = options.ackTimeoutMs ?? 5000;
  const sockets = new Map<string, Socket>();
  let seq = 0;

  const app = express();
  app.use(express.json({ limit: '64kb' }));
  const http: HttpServer = createServer(app);
  const io = new Server(http, { transports: ['websocket'], serveClient: false });
  // The memory tip from the socket.io docs: the handshake request is not needed after upgrade.
  io.engine.on('connection', (raw: { request: unknown }) => {
    raw.request = null;
  });

  io.use((socket, next) => {
    const token: unknown = socket.handshake.auth['token'];
    if (typeof token !== 'string') return next(new Error('token_missing'));
    jwtVerify(token, key, { algorithms: ['HS256'] }).then(
      ({ payload }) => {
        socket.data.deviceId = payload.sub;
        next();
      },
      () => next(new Error('token_invalid')),
    );
  });

  const deliver = async (socket: Socket, message: object) => {
    const started = performance.now();
    try {
      const ack = (await socket.timeout(ackTimeoutMs).emitWithAck('message', message)) as { ok?: boolean };
      return { outcome: ack.ok === true ? 'delivered' : 'rejected', latencyMs: performance.now() - started };
    } catch {
      return { outcome: 'timeout', latencyMs: performance.now() - started };
    }
  };

  io.on('connection', (socket) => {
    const deviceId = String(socket.data.deviceId);
    sockets.get(deviceId)?.disconnect(true);
    sockets.set(deviceId, socket);
    socket.on('disconnect', () => {
      if (sockets.get(deviceId) === socket) sockets.delete(deviceId);
    });
    socket.on('subscribe', (req: { topic?: unknown }, ack: Ack) => {
      if (typeof req?.topic !== 'string') return ack({ ok: false, error: { code: 'invalid_request' } });
      void socket.join(`topic:${req.topic}`);
      ack({ ok: true, topic: req.topic });
    });
    socket.on('send', (req: { to?: unknown; id?: unknown; payload?: unknown }, ack: Ack) => {
      if (typeof req?.to !== 'string') return ack({ ok: false, error: { code: 'invalid_request' } });
      const id = typeof req.id === 'string' ? req.id : `b-${++seq}`;
      const target = sockets.get(req.to);
      if (!target) return ack({ ok: true, id, outcome: 'not_connected', latencyMs: 0 });
      void deliver(target, { id, payload: req.payload, from: deviceId, sentAt: Date.now() }).then((r) =>
        ack({ ok: true, id, ...r }),
      );
    });
  });

  app.post('/push/:deviceId', async (req, res) => {
    const socket = sockets.get(req.params.deviceId);
    const id = `b-${++seq}`;
    if (!socket) {
      res.status(404).json({ outcome: 'not_connected', latencyMs: 0 });
      return;
    }
    const body = req.body as { payload?: unknown } | undefined;
    const result = await deliver(socket, { id, payload: body?.payload ?? null, sentAt: Date.now() });
    res.status(result.outcome === 'delivered' ? 200 : 504).json(result);
  });

  app.post('/broadcast/:topic', async (req, res) => {
    const body = req.body as { payload?: unknown } | undefined;
    const message = {
      id: `b-${++seq}`,
      topic: req.params.topic,
      payload: body?.payload ?? null,
      sentAt: Date.now(),
    };
    const started = performance.now();
    const room = io.to(`topic:${req.params.topic}`);
    let delivered = 0;
    try {
      delivered = ((await room.timeout(ackTimeoutMs).emitWithAck('message', message)) as unknown[]).length;
    } catch {
      // socket.io rejects the whole broadcast when any socket misses the deadline.
    }
    res.json({ delivered, latencyMs: performance.now() - started });
  });

  // Instrumentation only, the same as prom-client's default metrics in Pushline: each read of
  // /stats reports the event-loop delay since the previous read.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  app.get('/stats', (_req, res) => {
    const mem = process.memoryUsage();
    res.json({
      connections: sockets.size,
      rssBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      eventLoopDelayMaxMs: loopDelay.max / 1e6,
      eventLoopDelayP99Ms: loopDelay.percentile(99) / 1e6,
    });
    loopDelay.reset();
  });

  await new Promise<void>((resolve) => http.listen(options.port ?? 0, '127.0.0.1', resolve));
  const port = (http.address() as AddressInfo).port;
  return {
    port,
    close: async () => {
      loopDelay.disable();
      await io.close();
      http.closeAllConnections();
    },
  };
}
