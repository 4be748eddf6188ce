import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import {
  DeviceEvents,
  DeviceMessageAck,
  RemoteBroadcast,
  RemoteBroadcastResult,
  ServerBroadcastEvents,
  type BroadcastRequest,
  type BroadcastResult,
  type DeviceMessage,
} from '@pushline/protocol';
import {
  extractTraceContext,
  injectTraceHeaders,
  SpanKind,
  trace,
  withSpan,
  type Logger,
  type Tracer,
} from '@pushline/telemetry';
import type { Server } from 'socket.io';
import { PacketType } from 'socket.io-parser';
import type { ConnectionServerMetrics } from './metrics.ts';
import { topicRoom } from './subscriptions.ts';

/**
 * How long a broadcast's server waits beyond its timeout for the other servers' counts: they
 * stop waiting for their subscribers at the same moment, then answer through Redis.
 */
const RESULT_GRACE_MS = 250;

/** What one server's subscribers did with a broadcast. */
interface Count {
  readonly delivered: number;
  /** Every subscriber (or every server) answered before the timeout. */
  readonly complete: boolean;
}

/** A broadcast of this server waiting for the other servers' counts. */
interface Collecting {
  readonly expected: number;
  answered: number;
  delivered: number;
  readonly finish: (complete: boolean) => void;
}

/**
 * Sends a message to every subscriber of a topic on every server. The server the broadcast call
 * reached emits to its own subscribers and asks every other server, through the socket.io adapter,
 * to emit to theirs (`RemoteBroadcast`); each answers once with how many acked
 * (`RemoteBroadcastResult`). socket.io's own acked broadcast through the adapter sends one Redis
 * message per subscriber's ack instead (docs/performance.md, "Broadcasts counted per server").
 * `delivered` counts subscribers that acked `{ok:true}` within the timeout; a server that does not
 * answer within the timeout (and a short grace) counts none.
 */
export class TopicBroadcaster {
  readonly #io: Server;
  readonly #tracer: Tracer;
  readonly #metrics: ConnectionServerMetrics;
  readonly #logger: Logger;
  /** This server's broadcasts waiting for the other servers' counts, by request id. */
  readonly #collecting = new Map<string, Collecting>();

  constructor(options: { io: Server; tracer: Tracer; metrics: ConnectionServerMetrics; logger: Logger }) {
    this.#io = options.io;
    this.#tracer = options.tracer;
    this.#metrics = options.metrics;
    this.#logger = options.logger;
    this.#io.on(ServerBroadcastEvents.request, (raw: unknown) => this.#onRemoteBroadcast(raw));
    this.#io.on(ServerBroadcastEvents.result, (raw: unknown) => this.#onRemoteResult(raw));
  }

  broadcast(req: BroadcastRequest, kind: SpanKind = SpanKind.INTERNAL): Promise<BroadcastResult> {
    const parent = extractTraceContext(req.trace);
    return withSpan(
      this.#tracer,
      'broadcast',
      {
        kind,
        parent,
        attributes: { 'messaging.message.id': req.messageId, 'messaging.destination.name': req.topic },
      },
      async (span) => {
        const message: DeviceMessage = {
          id: req.messageId,
          payload: req.payload,
          topic: req.topic,
          sentAt: Date.now(),
          ...injectTraceHeaders(trace.setSpan(parent, span)),
        };
        const started = performance.now();
        // Redis unreachable: only this server is counted (see serverCountOrSelf in socket-server.ts).
        const others = (await this.#io.of('/').adapter.serverCount()) - 1;
        const remote = others > 0 ? this.#askOthers(req, message, others) : undefined;
        const [local, fromOthers] = await Promise.all([
          this.#emitLocal(req.topic, message, req.timeoutMs),
          remote ?? { delivered: 0, complete: true },
        ]);
        const complete = local.complete && fromOthers.complete;
        const delivered = local.delivered + fromOthers.delivered;
        this.#metrics.broadcasts.inc({ result: complete ? 'complete' : 'partial_timeout' });
        if (!complete)
          this.#logger.debug(
            { topic: req.topic, delivered, servers: others + 1 },
            'broadcast timed out waiting for some acks',
          );
        span.setAttribute('pushline.delivered', delivered);
        return { delivered, latencyMs: performance.now() - started };
      },
    );
  }

  /**
   * Emits to this server's subscribers of `topic` and counts their `{ok:true}` acks until all
   * answered or `timeoutMs` passed. One encoded packet for all of them, as socket.io's acked
   * broadcast does, but local only: socket.io's `io.local` would still wait for every server's
   * client count, which only comes through the adapter, so until the timeout.
   */
  #emitLocal(topic: string, message: DeviceMessage, timeoutMs: number): Promise<Count> {
    const nsp = this.#io.of('/');
    const packet: { type: PacketType; data: unknown[]; id?: number } = {
      type: PacketType.EVENT,
      data: [DeviceEvents.message, message],
    };
    return new Promise<Count>((resolve) => {
      let expected: number | undefined;
      let answered = 0;
      let delivered = 0;
      let done = false;
      const finish = (complete: boolean) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve({ delivered, complete });
      };
      const timer = setTimeout(() => {
        // Forget the ack callbacks of those that did not answer, as socket.io's acked broadcast
        // does on its timeout (`acks` is private in socket.io's types): a device that never
        // answers would otherwise keep one per broadcast until it disconnects.
        if (packet.id !== undefined) {
          for (const socket of nsp.sockets.values()) {
            (socket as unknown as { readonly acks: Map<number, unknown> }).acks.delete(packet.id);
          }
        }
        finish(false);
      }, timeoutMs);
      // Closing the server does not wait for the subscribers' acks.
      timer.unref();
      nsp.adapter.broadcastWithAck(
        packet,
        { rooms: new Set([topicRoom(topic)]), except: new Set(), flags: { local: true } },
        (clientCount: number) => {
          expected = clientCount;
          if (answered >= expected) finish(true);
        },
        (ack: unknown) => {
          answered++;
          const parsed = DeviceMessageAck.safeParse(ack);
          if (parsed.success && parsed.data.ok) delivered++;
          if (expected !== undefined && answered >= expected) finish(true);
        },
      );
    });
  }

  /** Asks the `expected` other servers to emit to their subscribers, and sums their answers. */
  #askOthers(req: BroadcastRequest, message: DeviceMessage, expected: number): Promise<Count> {
    const requestId = randomUUID();
    const ask: RemoteBroadcast = { requestId, topic: req.topic, message, timeoutMs: req.timeoutMs };
    return new Promise<Count>((resolve) => {
      const timer = setTimeout(() => collecting.finish(false), req.timeoutMs + RESULT_GRACE_MS);
      // Closing the server does not wait for a broadcast's stragglers.
      timer.unref();
      const collecting: Collecting = {
        expected,
        answered: 0,
        delivered: 0,
        finish: (complete) => {
          clearTimeout(timer);
          this.#collecting.delete(requestId);
          resolve({ delivered: collecting.delivered, complete });
        },
      };
      this.#collecting.set(requestId, collecting);
      this.#io.serverSideEmit(ServerBroadcastEvents.request, ask);
    });
  }

  /** Another server's broadcast: emit to this server's subscribers and answer with the count. */
  #onRemoteBroadcast(raw: unknown): void {
    const parsed = RemoteBroadcast.safeParse(raw);
    if (!parsed.success) {
      this.#logger.warn({ issues: parsed.error.issues }, 'ignored a malformed broadcast from another server');
      return;
    }
    const { requestId, topic, message, timeoutMs } = parsed.data;
    this.#emitLocal(topic, message, timeoutMs)
      .then(({ delivered }) => {
        const result: RemoteBroadcastResult = { requestId, delivered };
        this.#io.serverSideEmit(ServerBroadcastEvents.result, result);
      })
      .catch((err: unknown) => {
        // The broadcasting server then counts none of this server's subscribers.
        this.#logger.warn({ err, topic }, "could not answer another server's broadcast");
      });
  }

  /** A count for a broadcast of this server (every server hears every count; others' are ignored). */
  #onRemoteResult(raw: unknown): void {
    const parsed = RemoteBroadcastResult.safeParse(raw);
    if (!parsed.success) {
      this.#logger.warn(
        { issues: parsed.error.issues },
        'ignored a malformed broadcast count from another server',
      );
      return;
    }
    const collecting = this.#collecting.get(parsed.data.requestId);
    if (!collecting) return;
    collecting.delivered += parsed.data.delivered;
    collecting.answered++;
    if (collecting.answered >= collecting.expected) collecting.finish(true);
  }
}
