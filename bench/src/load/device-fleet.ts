/**
 * Load generator process: holds up to ~9k real socket.io-client devices (websocket transport),
 * acks every message (unless connected as silent ones), and runs device-to-device traffic on command. Started by FleetClient via
 * child_process.fork; answers the commands in fleet-protocol.ts over IPC.
 */
import { io, type Socket } from 'socket.io-client';
import { serveCommands } from './ipc.ts';
import {
  ConnectArgs,
  D2dArgs,
  SLOW_MS,
  SubscribeArgs,
  type ConnectResult,
  type D2dResult,
  type FleetStats,
  type SubscribeResult,
} from './fleet-protocol.ts';
import { forEachLimited, increment } from './pool.ts';
import { SampleReservoir, nowMs } from '../stats.ts';

type Credential = ConnectArgs['devices'][number];

interface Device {
  readonly cred: Credential;
  socket: Socket | undefined;
  urlIndex: number;
  url: string;
  connected: boolean;
}

const MAX_RECONNECT_BACKOFF_MS = 5000;

const devices = new Map<string, Device>();
const latencies = new SampleReservoir(200_000);
let received = 0;
let lastReceivedAt = 0;
let reconnects = 0;
let reconnectErrors = 0;
const reconnectErrorKinds: Record<string, number> = {};
let closing = false;
let urls: string[] = [];
let reconnectUrls: string[] | undefined;
let reconnectDelayMs = 0;
let connectTimeoutMs = 10_000;
/** Devices of this generator never ack (ConnectArgs.silent). */
let silent = false;
const timers = new Set<NodeJS.Timeout>();

/**
 * The generator checks only the fields it reads instead of parsing the full DeviceMessage
 * schema: the service tests own protocol conformance, and every CPU cycle spent here is taken
 * from the server under test on a 2-core machine.
 */
function onMessage(msg: unknown, ack: unknown): void {
  received++;
  const now = nowMs();
  lastReceivedAt = now;
  if (typeof msg === 'object' && msg !== null && 'payload' in msg) {
    const payload = (msg as { payload: unknown }).payload;
    if (typeof payload === 'object' && payload !== null && 't0' in payload) {
      const t0 = (payload as { t0: unknown }).t0;
      if (typeof t0 === 'number') latencies.add(now - t0);
    }
  }
  if (!silent && typeof ack === 'function') (ack as (a: unknown) => void)({ ok: true });
}

/** The url of the next attempt after a drop or a failed attempt. */
function nextUrl(device: Device): void {
  device.urlIndex++;
  if (reconnectUrls) device.url = reconnectUrls[Math.floor(Math.random() * reconnectUrls.length)] as string;
  else device.url = urls[device.urlIndex % urls.length] as string;
}

function openSocket(device: Device): Promise<void> {
  const url = device.url;
  // forceNew: without it socket.io-client multiplexes every device to one URL over one connection.
  const socket = io(url, {
    transports: ['websocket'],
    auth: { token: device.cred.token },
    forceNew: true,
    reconnection: false,
    timeout: connectTimeoutMs,
  });
  device.socket = socket;
  socket.on('message', onMessage);
  return new Promise((resolve, reject) => {
    // A server can end the connection after the websocket opened and before it answers
    // socket.io's CONNECT (a survivor of a storm timing out a handshake it could not get to):
    // socket.io-client then emits only `disconnect`, and without this the attempt would wait
    // for ever, a device that silently stopped trying.
    const closedBeforeConnect = (reason: string) => {
      socket.off('connect_error');
      socket.close();
      reject(new Error(`closed before connect: ${reason}`));
    };
    socket.once('disconnect', closedBeforeConnect);
    socket.once('connect', () => {
      device.connected = true;
      socket.off('connect_error');
      socket.off('disconnect', closedBeforeConnect);
      socket.on('disconnect', (reason) => onDisconnect(device, socket, reason));
      resolve();
    });
    socket.once('connect_error', (err: Error) => {
      socket.off('disconnect', closedBeforeConnect);
      socket.close();
      reject(err);
    });
  });
}

function onDisconnect(device: Device, socket: Socket, reason: string): void {
  if (device.socket !== socket) return;
  device.connected = false;
  if (closing || reason === 'io client disconnect' || reconnectDelayMs === 0) return;
  socket.removeAllListeners();
  nextUrl(device);
  scheduleReconnect(device, reconnectDelayMs * (0.5 + Math.random()), reconnectDelayMs);
}

function scheduleReconnect(device: Device, delayMs: number, backoffMs: number): void {
  const timer = setTimeout(() => {
    timers.delete(timer);
    if (closing) return;
    openSocket(device).then(
      () => {
        reconnects++;
      },
      (err: unknown) => {
        reconnectErrors++;
        increment(reconnectErrorKinds, err instanceof Error ? err.message : String(err));
        nextUrl(device);
        const next = Math.min(backoffMs * 2, MAX_RECONNECT_BACKOFF_MS);
        scheduleReconnect(device, next * (0.5 + Math.random()), next);
      },
    );
  }, delayMs);
  timers.add(timer);
}

async function connect(raw: unknown): Promise<ConnectResult> {
  const args = ConnectArgs.parse(raw);
  urls = args.urls;
  reconnectDelayMs = args.reconnectDelayMs;
  reconnectUrls = args.reconnectUrls;
  connectTimeoutMs = args.timeoutMs;
  silent = args.silent ?? false;
  const errors: Record<string, number> = {};
  let connected = 0;
  const base = devices.size;
  const started = nowMs();
  await forEachLimited(args.devices, args.concurrency, async (cred, i) => {
    const urlIndex = args.pin ?? base + i;
    const url = urls[urlIndex % urls.length] as string;
    const device: Device = { cred, socket: undefined, urlIndex, url, connected: false };
    devices.set(cred.id, device);
    try {
      await openSocket(device);
      connected++;
    } catch (err) {
      increment(errors, err instanceof Error ? err.message : String(err));
    }
  });
  return { connected, failed: args.devices.length - connected, ms: nowMs() - started, errors };
}

async function subscribe(raw: unknown): Promise<SubscribeResult> {
  const args = SubscribeArgs.parse(raw);
  let ok = 0;
  const started = nowMs();
  const live = [...devices.values()].filter((d) => d.connected && d.socket);
  await forEachLimited(live, args.concurrency, async (device) => {
    try {
      const ack: unknown = await device.socket
        ?.timeout(10_000)
        .emitWithAck('subscribe', { topic: args.topic });
      if (typeof ack === 'object' && ack !== null && (ack as { ok?: unknown }).ok === true) ok++;
    } catch {
      // counted as failed below
    }
  });
  return { ok, failed: live.length - ok, ms: nowMs() - started };
}

async function d2d(raw: unknown): Promise<D2dResult> {
  const args = D2dArgs.parse(raw);
  const outcomes: Record<string, number> = {};
  const samples = new SampleReservoir(200_000);
  const slowBySecond = Array.from({ length: Math.ceil(args.durationMs / 1000) }, () => 0);
  const inFlight = new Set<Promise<void>>();
  let sent = 0;
  let seq = 0;
  const started = nowMs();
  const sendOne = (from: string, to: string): void => {
    const socket = devices.get(from)?.socket;
    if (!socket?.connected) {
      increment(outcomes, 'sender_disconnected');
      return;
    }
    sent++;
    const t0 = nowMs();
    const p = socket
      .timeout(args.timeoutMs)
      .emitWithAck('send', { to, id: `d2d-${process.pid}-${++seq}`, payload: { t0 } })
      .then(
        (ack: unknown) => {
          const a = ack as { ok?: unknown; outcome?: unknown; error?: { code?: unknown } };
          const outcome =
            a.ok === true ? String(a.outcome) : `error:${String(a.error?.code ?? 'malformed_ack')}`;
          increment(outcomes, outcome);
          if (outcome !== 'delivered') return;
          const rtt = nowMs() - t0;
          samples.add(rtt);
          const second = Math.floor((t0 - started) / 1000);
          if (rtt > SLOW_MS && second < slowBySecond.length)
            slowBySecond[second] = (slowBySecond[second] ?? 0) + 1;
        },
        () => increment(outcomes, 'ack_timeout'),
      )
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };
  // Sends are due by elapsed time, not by tick count: timers run late on a busy machine, and the
  // offered rate must not sag with them.
  const tickMs = 5;
  let due = 0;
  let pairIndex = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = nowMs() - started;
      const target = Math.floor((Math.min(elapsed, args.durationMs) * args.ratePerS) / 1000);
      while (due < target) {
        due++;
        const pair = args.pairs[pairIndex++ % args.pairs.length] as [string, string];
        sendOne(pair[0], pair[1]);
      }
      if (elapsed >= args.durationMs) {
        clearInterval(timer);
        timers.delete(timer);
        resolve();
      }
    }, tickMs);
    timers.add(timer);
  });
  await Promise.all(inFlight);
  return { sent, ms: nowMs() - started, outcomes, latencies: samples.values(), slowBySecond };
}

function stats(): Promise<FleetStats> {
  let connected = 0;
  for (const d of devices.values()) if (d.connected) connected++;
  return Promise.resolve({
    connected,
    received,
    latencies: latencies.values(),
    reconnects,
    reconnectErrors,
    reconnectErrorKinds,
    lastReceivedAt,
  });
}

function reset(): Promise<object> {
  received = 0;
  lastReceivedAt = 0;
  latencies.clear();
  return Promise.resolve({});
}

function closeAll(): Promise<void> {
  closing = true;
  for (const timer of timers) clearTimeout(timer);
  timers.clear();
  for (const d of devices.values()) d.socket?.close();
  devices.clear();
  return Promise.resolve();
}

serveCommands(
  {
    connect,
    subscribe,
    d2d,
    stats,
    reset,
    disconnect: async () => {
      await closeAll();
      closing = false;
      return {};
    },
  },
  closeAll,
);
