import {
  CHANNEL_MAX_FRAME_CALLS,
  CHANNEL_PATH,
  CHANNEL_PROTOCOL,
  CHANNEL_WINDOW_HEADER,
  ChannelResultsFrame,
  type BroadcastRequest,
  type BroadcastResult,
  type ChannelOp,
  type ChannelResult,
  type DeliverRequest,
  type DeliverResult,
  type ReplacedNotice,
  type ReplacedResult,
} from '@pushline/protocol';
import { backoffMs, closeOnce } from '@pushline/runtime';
import { Counter, injectTraceHeaders, stageCounter, type Logger, type Registry } from '@pushline/telemetry';
import { WebSocket, type RawData } from 'ws';
import { DeliveryTransportError, InternalAuthError } from '../errors.ts';
import type { DeliveryTransport } from '../types.ts';
import { Fifo } from './queue.ts';

export interface ChannelTransportOptions {
  /** Sent as `authorization: Bearer <token>` at the handshake; the servers' PUSHLINE_INTERNAL_TOKEN. */
  readonly internalToken: string;
  readonly logger: Logger;
  /** When given, records `pushline_channel_calls_total` and `pushline_channel_connects_total`. */
  readonly metrics?: Registry;
  /** PEM certificate(s) trusted for `https://` servers (PUSHLINE_INTERNAL_TLS_CA); default: the system's. */
  readonly tlsCa?: string | Buffer | undefined;
  /** Waited beyond a call's `timeoutMs` for the server to report the device's timeout itself. Default 1000. */
  readonly timeoutMarginMs?: number;
  /** Longest the opening handshake may take. Default 3000. */
  readonly connectTimeoutMs?: number;
  /** A ping every this long; a server silent for two intervals is dropped. Default 5000. */
  readonly pingIntervalMs?: number;
  /** Calls that may wait for a server's channel (its connect or its credit) before more are refused. Default 20 000. */
  readonly maxQueuedPerServer?: number;
  /** Delays between connect attempts after a failure: full jitter up to base × 2^failures, at most max. Default 100 / 2000. */
  readonly reconnectBaseMs?: number;
  readonly reconnectMaxMs?: number;
  /** A channel with nothing in flight for this long is closed. Default 120 000. */
  readonly idleCloseMs?: number;
}

/** Credit assumed when a server names none (it always does). */
const DEFAULT_WINDOW = 1024;
/** Largest results frame accepted: 1 000 results of a few hundred bytes. */
const MAX_RESULTS_FRAME_BYTES = 4 * 1024 * 1024;

type CallResult = 'ok' | 'unreachable' | 'lost' | 'timeout' | 'auth' | 'overloaded' | 'error';
type ConnectResult = 'ok' | 'unreachable' | 'auth' | 'incompatible';
/** Why a connect attempt failed: what every call that waited for it is told. */
type Refusal = Exclude<ConnectResult, 'ok'>;

interface OpTypes {
  deliver: { req: DeliverRequest; result: DeliverResult };
  broadcast: { req: BroadcastRequest; result: BroadcastResult };
  replaced: { req: ReplacedNotice; result: ReplacedResult };
}

interface Call {
  readonly op: ChannelOp;
  readonly req: unknown;
  readonly startedAt: number;
  /** queued: not written yet; sent: written, unanswered; expired: sent, settled by its deadline, unanswered. */
  state: 'queued' | 'sent' | 'expired' | 'done';
  id: number;
  timer: NodeJS.Timeout | undefined;
  count(result: CallResult): void;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

/**
 * Every internal call to connection servers over one persistent WebSocket per server (the
 * channel, docs/internal-protocol.md): calls made in the same event-loop turn go out as one frame,
 * each call's outcome settles as soon as its result arrives, each call has its own deadline, and
 * at most the server's credit of calls is unanswered at once (the rest wait, bounded). Whether a
 * call may have reached the server decides its outcome when there is no result (decision 0015):
 * a call never written is `server_unreachable`, one written on a channel that then broke is
 * `server_lost`, one without a result by its deadline `server_timeout`.
 */
export class ChannelDeliveryTransport implements DeliveryTransport {
  readonly #options: Required<Omit<ChannelTransportOptions, 'metrics' | 'tlsCa'>> &
    Pick<ChannelTransportOptions, 'tlsCa'>;
  readonly #peers = new Map<string, Peer>();
  readonly #calls: Counter<'op' | 'result'> | undefined;
  readonly #connects: Counter<'result'> | undefined;
  readonly #frames: Counter | undefined;
  readonly #pinger: NodeJS.Timeout;
  #closed = false;
  readonly close: () => Promise<void>;

  constructor(options: ChannelTransportOptions) {
    this.#options = {
      internalToken: options.internalToken,
      logger: options.logger,
      tlsCa: options.tlsCa,
      timeoutMarginMs: options.timeoutMarginMs ?? 1000,
      connectTimeoutMs: options.connectTimeoutMs ?? 3000,
      pingIntervalMs: options.pingIntervalMs ?? 5000,
      maxQueuedPerServer: options.maxQueuedPerServer ?? 20_000,
      reconnectBaseMs: options.reconnectBaseMs ?? 100,
      reconnectMaxMs: options.reconnectMaxMs ?? 2000,
      idleCloseMs: options.idleCloseMs ?? 120_000,
    };
    if (options.metrics) {
      this.#calls = stageCounter({
        name: 'pushline_channel_calls_total',
        help: 'Calls to connection servers over the internal channel, by op and result (lost: the channel broke after the call was written; overloaded: it never got credit).',
        labels: {
          op: ['deliver', 'broadcast', 'replaced'],
          result: ['ok', 'unreachable', 'lost', 'timeout', 'auth', 'overloaded', 'error'],
        },
        registry: options.metrics,
      });
      this.#connects = stageCounter({
        name: 'pushline_channel_connects_total',
        help: 'Channel connect attempts to connection servers, by result.',
        labels: { result: ['ok', 'unreachable', 'auth', 'incompatible'] },
        registry: options.metrics,
      });
      this.#frames = new Counter({
        name: 'pushline_channel_frames_sent_total',
        help: 'Frames of calls written to connection servers; calls per frame = calls / frames.',
        registers: [options.metrics],
      });
    }
    this.#pinger = setInterval(() => this.#tick(), this.#options.pingIntervalMs).unref();
    this.close = closeOnce(async () => {
      this.#closed = true;
      clearInterval(this.#pinger);
      const peers = [...this.#peers.values()];
      this.#peers.clear();
      await Promise.all(peers.map((p) => p.close()));
    });
  }

  deliver(serverUrl: string, req: DeliverRequest): Promise<DeliverResult> {
    // Written a turn later, from another caller's context: each call takes its own trace now.
    if (req.trace === undefined) {
      const trace = injectTraceHeaders();
      if (trace.traceparent) req = { ...req, trace };
    }
    return this.#call(serverUrl, 'deliver', req, req.timeoutMs);
  }

  broadcast(serverUrl: string, req: BroadcastRequest): Promise<BroadcastResult> {
    if (req.trace === undefined) {
      const trace = injectTraceHeaders();
      if (trace.traceparent) req = { ...req, trace };
    }
    return this.#call(serverUrl, 'broadcast', req, req.timeoutMs);
  }

  /** Tells a server that a device it held has connected elsewhere (closes that old connection). */
  replaced(serverUrl: string, notice: ReplacedNotice, timeoutMs = 1000): Promise<ReplacedResult> {
    return this.#call(serverUrl, 'replaced', notice, timeoutMs);
  }

  /** Channels open or opening, for tests and diagnostics. */
  get openChannels(): number {
    let n = 0;
    for (const peer of this.#peers.values()) if (peer.connected) n++;
    return n;
  }

  #call<O extends ChannelOp>(
    serverUrl: string,
    op: O,
    req: OpTypes[O]['req'],
    timeoutMs: number,
  ): Promise<OpTypes[O]['result']> {
    if (this.#closed) return Promise.reject(closedError(serverUrl));
    let peer = this.#peers.get(serverUrl);
    if (!peer) {
      peer = new Peer(serverUrl, this.#options, {
        connected: (result) => this.#connects?.inc({ result }),
        wrote: () => this.#frames?.inc(),
      });
      this.#peers.set(serverUrl, peer);
    }
    const count = (result: CallResult) => this.#calls?.inc({ op, result });
    return peer.call(op, req, timeoutMs + this.#options.timeoutMarginMs, count) as Promise<
      OpTypes[O]['result']
    >;
  }

  /** Liveness pings, and channels idle long enough are closed and forgotten. */
  #tick(): void {
    const now = performance.now();
    for (const [url, peer] of this.#peers) {
      if (peer.idleSince !== undefined && now - peer.idleSince > this.#options.idleCloseMs) {
        this.#peers.delete(url);
        void peer.close();
      } else peer.ping(now);
    }
  }
}

function closedError(serverUrl: string): DeliveryTransportError {
  return new DeliveryTransportError('delivery transport is closed', { failure: 'network', serverUrl });
}

/** The channel to one server: its WebSocket (when open), its calls waiting and in flight. */
class Peer {
  readonly #url: string;
  readonly #wsUrl: string;
  readonly #options: PeerOptions;
  readonly #hooks: PeerHooks;
  readonly #log: Logger;
  #ws: WebSocket | undefined;
  #open = false;
  #window = DEFAULT_WINDOW;
  #status: number | undefined;
  readonly #queue = new Fifo<Call>();
  /** Queued calls whose deadline has not passed (the queue also holds settled ones until flushed). */
  #queued = 0;
  readonly #sent = new Map<number, Call>();
  #nextId = 0;
  #failures = 0;
  #retryAt = 0;
  #refusal: Refusal | undefined;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #flushScheduled = false;
  #lastHeard = 0;
  #closed = false;
  idleSince: number | undefined = performance.now();

  constructor(serverUrl: string, options: PeerOptions, hooks: PeerHooks) {
    this.#url = serverUrl;
    this.#wsUrl = channelUrl(serverUrl);
    this.#options = options;
    this.#hooks = hooks;
    this.#log = options.logger;
  }

  get connected(): boolean {
    return this.#open;
  }

  call(
    op: ChannelOp,
    req: unknown,
    deadlineMs: number,
    count: (result: CallResult) => void,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const call: Call = {
        op,
        req,
        startedAt: performance.now(),
        state: 'queued',
        id: -1,
        timer: undefined,
        count,
        resolve,
        reject,
      };
      // A server that refused the last attempt is not asked again before its backoff has passed.
      if (this.#refusal && this.#ws === undefined && performance.now() < this.#retryAt) {
        this.#settleRefused(call, this.#refusal);
        return;
      }
      if (this.#queued >= this.#options.maxQueuedPerServer) {
        count('overloaded');
        reject(this.#overloaded(`${this.#queued} calls already wait for its channel`));
        return;
      }
      call.timer = setTimeout(() => this.#expire(call), deadlineMs);
      this.#queue.push(call);
      this.#queued++;
      this.idleSince = undefined;
      if (this.#ws === undefined) this.#connect();
      else if (this.#open) this.#scheduleFlush();
    });
  }

  ping(now: number): void {
    const ws = this.#ws;
    if (!ws || !this.#open) return;
    if (now - this.#lastHeard > 2 * this.#options.pingIntervalMs) {
      this.#log.warn({ serverUrl: this.#url }, 'channel silent for two ping intervals; dropping it');
      ws.terminate();
      return;
    }
    ws.ping();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    const err = closedError(this.#url);
    for (const call of this.#queue.drain()) this.#fail(call, err);
    for (const call of this.#sent.values()) this.#fail(call, err);
    this.#sent.clear();
    this.#queued = 0;
    const ws = this.#ws;
    if (!ws) return;
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    ws.terminate();
    await closed;
  }

  #connect(): void {
    if (this.#closed) return;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#status = undefined;
    const ws = new WebSocket(this.#wsUrl, CHANNEL_PROTOCOL, {
      headers: { authorization: `Bearer ${this.#options.internalToken}` },
      perMessageDeflate: false,
      handshakeTimeout: this.#options.connectTimeoutMs,
      maxPayload: MAX_RESULTS_FRAME_BYTES,
      // Frames are JSON read with Buffer#toString, which needs no prior UTF-8 check; masking
      // guards browsers' proxies from forged requests, which an authenticated service peer is not.
      skipUTF8Validation: true,
      generateMask: zeroMask,
      ...(this.#options.tlsCa !== undefined ? { ca: this.#options.tlsCa } : {}),
    });
    this.#ws = ws;
    ws.on('upgrade', (res) => {
      const window = Number(res.headers[CHANNEL_WINDOW_HEADER]);
      this.#window = Number.isInteger(window) && window > 0 ? window : DEFAULT_WINDOW;
    });
    ws.on('unexpected-response', (_req, res) => {
      this.#status = res.statusCode;
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      if (ws.protocol !== CHANNEL_PROTOCOL) {
        this.#status = 426;
        ws.terminate();
        return;
      }
      this.#open = true;
      this.#refusal = undefined;
      this.#failures = 0;
      this.#lastHeard = performance.now();
      this.#hooks.connected('ok');
      this.#scheduleFlush();
    });
    ws.on('message', (data: RawData) => this.#onFrame(data));
    ws.on('pong', () => (this.#lastHeard = performance.now()));
    ws.on('error', (err) => {
      // The close that follows settles the calls; the reason is logged here.
      this.#log.debug({ err, serverUrl: this.#url }, 'channel error');
    });
    ws.on('close', () => this.#onClose(ws));
  }

  #onClose(ws: WebSocket): void {
    if (this.#ws !== ws) return;
    const wasOpen = this.#open;
    this.#ws = undefined;
    this.#open = false;
    this.#flushScheduled = false;
    if (this.#closed) return;
    const now = performance.now();
    this.#failures++;
    const delay = backoffMs(this.#failures - 1, this.#options.reconnectBaseMs, this.#options.reconnectMaxMs);
    if (!wasOpen) {
      // Nothing was written: every call waiting for this attempt is known not to have left.
      const refusal: Refusal =
        this.#status === 401 ? 'auth' : this.#status !== undefined ? 'incompatible' : 'unreachable';
      this.#hooks.connected(refusal);
      this.#refusal = refusal;
      this.#retryAt = now + delay;
      if (refusal === 'unreachable')
        this.#log.debug({ serverUrl: this.#url }, 'connection server unreachable');
      else
        this.#log.error(
          { serverUrl: this.#url, status: this.#status },
          'connection server refused the channel',
        );
      for (const call of this.#queue.drain()) {
        if (call.state === 'queued') this.#settleRefused(call, refusal);
      }
      this.#queued = 0;
      this.#markIdle();
      return;
    }
    // Written and unanswered: the server may have acted on them.
    if (this.#sent.size > 0) {
      this.#log.warn(
        { serverUrl: this.#url, inFlight: this.#sent.size },
        'channel lost with calls in flight',
      );
    }
    for (const call of this.#sent.values()) {
      if (call.state === 'sent') this.#settleLost(call);
    }
    this.#sent.clear();
    // Calls not written yet go out on the next connection, after the backoff.
    if (this.#queued > 0) this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
    else this.#markIdle();
  }

  #onFrame(data: RawData): void {
    this.#lastHeard = performance.now();
    let frame: ChannelResultsFrame;
    try {
      const parsed = ChannelResultsFrame.safeParse(JSON.parse(rawText(data)));
      if (!parsed.success) throw parsed.error;
      frame = parsed.data;
    } catch (err) {
      // A server outside the contract: what it holds may have been acted on, so the channel is
      // dropped and those calls end as lost.
      this.#log.error(
        { err, serverUrl: this.#url },
        'connection server sent a frame outside the channel contract',
      );
      this.#ws?.terminate();
      return;
    }
    for (const result of frame.results) {
      const call = this.#sent.get(result.id);
      if (!call) continue;
      this.#sent.delete(result.id);
      if (call.state === 'sent') this.#settleResult(call, result);
      else call.state = 'done';
    }
    if (this.#queued > 0) this.#scheduleFlush();
    else this.#markIdle();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  /** Writes the calls waiting, as many as the credit allows, in frames of at most the frame limit. */
  #flush(): void {
    this.#flushScheduled = false;
    const ws = this.#ws;
    if (!ws || !this.#open || ws.readyState !== WebSocket.OPEN) return;
    while (this.#queued > 0 && this.#sent.size < this.#window) {
      const calls: { id: number; op: ChannelOp; req: unknown }[] = [];
      while (
        calls.length < CHANNEL_MAX_FRAME_CALLS &&
        this.#sent.size < this.#window &&
        this.#queue.length > 0
      ) {
        const call = this.#queue.shift() as Call;
        if (call.state !== 'queued') continue;
        this.#queued--;
        call.state = 'sent';
        call.id = this.#nextId++;
        this.#sent.set(call.id, call);
        calls.push({ id: call.id, op: call.op, req: call.req });
      }
      if (calls.length === 0) break;
      ws.send(JSON.stringify({ calls }));
      this.#hooks.wrote();
    }
  }

  #expire(call: Call): void {
    call.timer = undefined;
    if (call.state === 'sent') {
      // Its credit stays taken until the server answers it (or the channel goes).
      call.state = 'expired';
      call.count('timeout');
      this.#log.warn({ serverUrl: this.#url, op: call.op }, 'connection server gave no result in time');
      settleTransport(call, 'server_timeout', this.#url, performance.now() - call.startedAt);
      return;
    }
    if (call.state !== 'queued') return;
    call.state = 'done';
    this.#queued--;
    if (this.#open) {
      call.count('overloaded');
      call.reject(this.#overloaded('no credit on its channel before the deadline'));
    } else {
      // Still waiting for the connection: never written, so known not delivered.
      call.count('unreachable');
      settleTransport(call, 'server_unreachable', this.#url, performance.now() - call.startedAt);
    }
  }

  #settleResult(call: Call, result: ChannelResult): void {
    call.state = 'done';
    clearTimeout(call.timer);
    const count = call.count;
    if (result.error) {
      const failure =
        result.error.code === 'window_exceeded'
          ? 'overloaded'
          : result.error.code === 'invalid_request'
            ? 'invalid_request'
            : 'server_error';
      count(failure === 'overloaded' ? 'overloaded' : 'error');
      call.reject(
        new DeliveryTransportError(
          `connection server ${this.#url} refused a ${call.op} call (${result.error.code}): ${result.error.message}`,
          { failure, serverUrl: this.#url },
        ),
      );
      return;
    }
    const value = result[call.op];
    if (value === undefined) {
      count('error');
      call.reject(
        new DeliveryTransportError(
          `connection server ${this.#url} answered a ${call.op} call without its result`,
          {
            failure: 'invalid_response',
            serverUrl: this.#url,
          },
        ),
      );
      return;
    }
    count('ok');
    call.resolve(value);
  }

  #settleLost(call: Call): void {
    call.state = 'done';
    clearTimeout(call.timer);
    call.count('lost');
    settleTransport(call, 'server_lost', this.#url, performance.now() - call.startedAt);
  }

  #settleRefused(call: Call, refusal: Refusal): void {
    call.state = 'done';
    clearTimeout(call.timer);
    const count = call.count;
    if (refusal === 'unreachable') {
      count('unreachable');
      settleTransport(call, 'server_unreachable', this.#url, performance.now() - call.startedAt);
    } else if (refusal === 'auth') {
      count('auth');
      call.reject(new InternalAuthError(this.#url));
    } else {
      count('error');
      call.reject(
        new DeliveryTransportError(
          `connection server ${this.#url} has no channel ${CHANNEL_PROTOCOL} (answered ${this.#status ?? 'without one'})`,
          { failure: 'incompatible', serverUrl: this.#url },
        ),
      );
    }
  }

  #fail(call: Call, err: unknown): void {
    if (call.state !== 'queued' && call.state !== 'sent') return;
    call.state = 'done';
    clearTimeout(call.timer);
    call.count('error');
    call.reject(err);
  }

  #overloaded(why: string): DeliveryTransportError {
    return new DeliveryTransportError(`connection server ${this.#url} is at its channel's credit: ${why}`, {
      failure: 'overloaded',
      serverUrl: this.#url,
    });
  }

  #markIdle(): void {
    if (this.#queued === 0 && this.#sent.size === 0) this.idleSince = performance.now();
  }
}

interface PeerHooks {
  connected(result: ConnectResult): void;
  wrote(): void;
}

type PeerOptions = Required<Omit<ChannelTransportOptions, 'metrics' | 'tlsCa'>> &
  Pick<ChannelTransportOptions, 'tlsCa'>;

/**
 * A call that has no result from the server: a delivery gets the outcome its reason stands for
 * (`TransportReason`), any other call a typed error.
 */
function settleTransport(
  call: Call,
  reason: 'server_unreachable' | 'server_lost' | 'server_timeout',
  serverUrl: string,
  latencyMs: number,
): void {
  if (call.op === 'deliver') {
    const result: DeliverResult = {
      outcome: reason === 'server_unreachable' ? 'not_connected' : 'timeout',
      reason,
      latencyMs,
    };
    call.resolve(result);
    return;
  }
  const what =
    reason === 'server_unreachable'
      ? 'unreachable'
      : reason === 'server_lost'
        ? `lost during a ${call.op}; it may have acted on it`
        : `gave no ${call.op} result in time; it may have acted on it`;
  call.reject(
    new DeliveryTransportError(`connection server ${serverUrl} ${what}`, { failure: reason, serverUrl }),
  );
}

function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

function rawText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

/** `http://host:port` (a registry record's serverUrl) → `ws://host:port/internal/v1/channel`. */
export function channelUrl(serverUrl: string): string {
  const url = new URL(CHANNEL_PATH, serverUrl);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}
