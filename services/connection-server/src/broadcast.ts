import { performance } from 'node:perf_hooks';
import {
  DeviceEvents,
  DeviceMessageAck,
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
import type { ConnectionServerMetrics } from './metrics.ts';
import { topicRoom } from './subscriptions.ts';

/**
 * Sends a message to every subscriber of a topic on every server: one acked emit to the topic's
 * room through the Redis adapter, which collects the acks of the other servers' sockets too.
 * `delivered` counts subscribers that acked `{ok:true}` within the timeout.
 */
export class TopicBroadcaster {
  readonly #io: Server;
  readonly #tracer: Tracer;
  readonly #metrics: ConnectionServerMetrics;
  readonly #logger: Logger;

  constructor(options: { io: Server; tracer: Tracer; metrics: ConnectionServerMetrics; logger: Logger }) {
    this.#io = options.io;
    this.#tracer = options.tracer;
    this.#metrics = options.metrics;
    this.#logger = options.logger;
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
        const result = await new Promise<BroadcastResult>((resolve) => {
          this.#io
            .to(topicRoom(req.topic))
            .timeout(req.timeoutMs)
            .emit(DeviceEvents.message, message, (err: Error | null, acks: unknown[] | undefined) => {
              // On timeout socket.io still hands over the acks that did arrive.
              const delivered = (acks ?? []).filter((a) => {
                const parsed = DeviceMessageAck.safeParse(a);
                return parsed.success && parsed.data.ok;
              }).length;
              this.#metrics.broadcasts.inc({ result: err ? 'partial_timeout' : 'complete' });
              if (err)
                this.#logger.debug(
                  { topic: req.topic, delivered },
                  'broadcast timed out waiting for some acks',
                );
              resolve({ delivered, latencyMs: performance.now() - started });
            });
        });
        span.setAttribute('pushline.delivered', result.delivered);
        return result;
      },
    );
  }
}
