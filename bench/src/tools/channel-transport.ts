// `node bench/src/tools/channel-transport.ts [--items=200000] [--concurrency=200] [--rounds=3]`:
// the candidates for the internal channel (docs/decisions/0021), measured the same way: a client
// process and a server process over loopback, `concurrency` callers in a closed loop each sending
// one ~300-byte JSON item and waiting for its result, items written in the same event-loop turn
// sent as one frame (and results likewise), the server answering each item one turn after it read
// it (as a device ack would). Prints one line per candidate and round: items/s, client and server
// CPU µs per item, p50/p99 round trip. Bounded: `items` per round, and 60 s per round at most.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { WebSocket, WebSocketServer } from 'ws';

type Candidate = 'ws' | 'ws-masked' | 'net';
const CANDIDATES: readonly Candidate[] = ['ws', 'ws-masked', 'net'];
const ROUND_LIMIT_MS = 60_000;

const { values } = parseArgs({
  options: {
    role: { type: 'string', default: 'client' },
    candidate: { type: 'string', default: '' },
    items: { type: 'string', default: '200000' },
    concurrency: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '3' },
  },
});

interface Item {
  id: number;
  deviceId: string;
  messageId: string;
  connectionId: string;
  source: string;
  timeoutMs: number;
  payload: unknown;
  trace: { traceparent: string };
}

/** Collects what one turn produces and hands it over as one batch on the next turn. */
function batcher<T>(flush: (batch: T[]) => void): (item: T) => void {
  let pending: T[] = [];
  let scheduled = false;
  const run = () => {
    scheduled = false;
    const batch = pending;
    pending = [];
    flush(batch);
  };
  return (item) => {
    pending.push(item);
    if (!scheduled) {
      scheduled = true;
      setImmediate(run);
    }
  };
}

/** 4-byte big-endian length, then the JSON text. */
function lengthPrefixed(text: string): Buffer {
  const body = Buffer.from(text);
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

function readFrames(socket: Socket, onFrame: (text: string) => void): void {
  let rest: Buffer | undefined;
  socket.on('data', (chunk: Buffer) => {
    let data = rest ? Buffer.concat([rest, chunk]) : chunk;
    while (data.length >= 4) {
      const size = data.readUInt32BE(0);
      if (data.length < 4 + size) break;
      onFrame(data.toString('utf8', 4, 4 + size));
      data = data.subarray(4 + size);
    }
    rest = data.length > 0 ? data : undefined;
  });
}

/** The server side: answers every item of a frame one turn later, results batched per turn. */
async function serve(candidate: Candidate): Promise<number> {
  const answer = (send: (text: string) => void) => {
    const queue = batcher<{ id: number; result: unknown }>((batch) => send(JSON.stringify(batch)));
    return (text: string) => {
      const items = JSON.parse(text) as Item[];
      for (const item of items) {
        setImmediate(() => queue({ id: item.id, result: { outcome: 'delivered', latencyMs: 1.25 } }));
      }
    };
  };
  if (candidate === 'net') {
    const server = createServer((socket) => {
      socket.setNoDelay(true);
      readFrames(
        socket,
        answer((text) => socket.write(lengthPrefixed(text))),
      );
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return (server.address() as { port: number }).port;
  }
  const http = createHttpServer();
  const wss = new WebSocketServer({
    server: http,
    perMessageDeflate: false,
    maxPayload: 64 << 20,
    skipUTF8Validation: candidate === 'ws',
  });
  wss.on('connection', (ws) => {
    const onFrame = answer((text) => ws.send(text));
    ws.on('message', (data: Buffer) => onFrame(data.toString('utf8')));
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  return (http.address() as { port: number }).port;
}

/** A client connection: `send` one frame of items, `onResults` for each frame of results. */
async function dial(
  candidate: Candidate,
  port: number,
  onResults: (text: string) => void,
): Promise<{ send: (text: string) => void; close: () => void }> {
  if (candidate === 'net') {
    const socket = connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    await once(socket, 'connect');
    readFrames(socket, onResults);
    return { send: (text) => socket.write(lengthPrefixed(text)), close: () => socket.destroy() };
  }
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, {
    perMessageDeflate: false,
    ...(candidate === 'ws'
      ? { generateMask: (mask: Buffer) => void mask.fill(0), skipUTF8Validation: true }
      : {}),
  });
  await once(ws, 'open');
  ws.on('message', (data: Buffer) => onResults(data.toString('utf8')));
  return { send: (text) => ws.send(text), close: () => ws.terminate() };
}

function cpuMicros(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return d.user + d.system;
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0;
}

async function round(candidate: Candidate, child: ChildProcess, total: number, concurrency: number) {
  child.send({ candidate });
  const [port] = (await once(child, 'message')) as [number];
  const waiting = new Map<number, (at: number) => void>();
  const conn = await dial(candidate, port, (text) => {
    const at = performance.now();
    for (const r of JSON.parse(text) as { id: number }[]) {
      const done = waiting.get(r.id);
      waiting.delete(r.id);
      done?.(at);
    }
  });
  const queue = batcher<Item>((batch) => conn.send(JSON.stringify(batch)));
  const latencies = new Float64Array(total);
  let next = 0;
  let completed = 0;
  const payload = { title: 'A message', body: 'x'.repeat(120), n: 42 };
  const deadline = performance.now() + ROUND_LIMIT_MS;
  const caller = async () => {
    while (next < total && performance.now() < deadline) {
      const id = next++;
      const started = performance.now();
      const at = await new Promise<number>((resolve) => {
        waiting.set(id, resolve);
        queue({
          id,
          deviceId: `device-${id % 1000}`,
          messageId: `m-${id}`,
          connectionId: 'c0a8f1e2d3',
          source: 'direct',
          timeoutMs: 5000,
          payload,
          trace: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
        });
      });
      latencies[completed++] = at - started;
    }
  };
  child.send({ cpu: 'start' });
  await once(child, 'message');
  const cpu = process.cpuUsage();
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, caller));
  const elapsed = performance.now() - started;
  const clientCpu = cpuMicros(cpu);
  child.send({ cpu: 'stop' });
  const [serverCpu] = (await once(child, 'message')) as [number];
  conn.close();
  const sorted = latencies.subarray(0, completed).sort();
  return {
    candidate,
    items: completed,
    perS: Math.round((completed / elapsed) * 1000),
    clientUs: +(clientCpu / completed).toFixed(2),
    serverUs: +(serverCpu / completed).toFixed(2),
    p50Ms: +percentile(sorted, 0.5).toFixed(2),
    p99Ms: +percentile(sorted, 0.99).toFixed(2),
  };
}

if (values.role === 'server') {
  let cpu = process.cpuUsage();
  process.on('message', (msg: { candidate?: Candidate; cpu?: 'start' | 'stop' }) => {
    if (msg.candidate) void serve(msg.candidate).then((port) => process.send?.(port));
    else if (msg.cpu === 'start') {
      cpu = process.cpuUsage();
      process.send?.(0);
    } else if (msg.cpu === 'stop') process.send?.(cpuMicros(cpu));
  });
  process.on('disconnect', () => process.exit(0));
} else {
  const total = Number(values.items);
  const concurrency = Number(values.concurrency);
  const rounds = Number(values.rounds);
  const chosen = values.candidate ? [values.candidate as Candidate] : CANDIDATES;
  for (let r = 0; r < rounds; r++) {
    // Candidates alternate within a round, so each sees the same background load.
    for (const candidate of chosen) {
      const child = fork(import.meta.filename, ['--role=server']);
      try {
        console.log(JSON.stringify({ round: r + 1, ...(await round(candidate, child, total, concurrency)) }));
      } finally {
        child.kill();
      }
    }
  }
}
