import { setTimeout as sleep } from 'node:timers/promises';
import { pushTargetKey, type PushRequest } from '@pushline/protocol';
import type { OutgoingRecord, Producer } from '@pushline/kafka';
import type { DeviceFleet } from '../load/fleet.ts';
import { row } from '../report/model.ts';
import { measureCpu, perMessage, type PerMessageCost } from '../targets/memory.ts';
import { nowMs, perSecond, summarize, type LatencySummary } from '../stats.ts';
import { pollUntil, requirePushline, withFleet } from './common.ts';
import { ScenarioSkipped, type Scenario, type ScenarioContext, type ScenarioOutput } from './types.ts';

const BATCH = 500;
const MAX_BATCHES_IN_FLIGHT = 4;

interface PhaseResult {
  readonly published: number;
  readonly received: number;
  readonly deliveriesPerS: number;
  readonly latency: LatencySummary;
  /** Platform CPU (services, Redis, Kafka) per delivered message. */
  readonly cost: PerMessageCost;
}

function plan(smoke: boolean) {
  return smoke ? { burst: 500, paceMs: 2000 } : { burst: 30_000, paceMs: 10_000 };
}

/**
 * Scenario 3: PushRequest records written straight to the push-requests topic (as a backend
 * producing to Kafka would), consumed by the message processor and delivered to connected
 * devices. Phase 1 finds the maximum; phase 2 offers half of it at a steady pace for latency.
 */
export const asyncPath: Scenario = {
  id: 3,
  name: 'async',
  title: 'Async path: Kafka → message processor → device',
  timeoutMs: (o) => (o.smoke ? 90_000 : 240_000),
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const pushline = requirePushline(ctx);
    if (!pushline.hasProcessor) throw new ScenarioSkipped('services/message-processor has no main.ts yet');
    const { burst, paceMs } = plan(ctx.options.smoke);
    const devices = Math.min(ctx.options.devices, 1000);
    const producer = await pushline.producer();
    const topic = pushline.topics.pushRequests;
    return withFleet(ctx, 'async', devices, async (fleet, ids) => {
      await fleet.connect({ urls: pushline.deviceUrls });
      // A warm-up burst: group join, connection pools and JIT are not what phase 1 measures.
      await publishBurst(producer, topic, ids, Math.min(burst, 1000));
      await drain(fleet, Math.min(burst, 1000));
      await fleet.reset();

      const started = nowMs();
      const burstRun = await measureCpu(pushline.processes(), async () => {
        const n = await publishBurst(producer, topic, ids, burst);
        return { published: n, stats: await drain(fleet, n) };
      });
      const { published, stats: max } = burstRun.value;
      const maxResult: PhaseResult = {
        published,
        received: max.received,
        deliveriesPerS: perSecond(max.received, Math.max(1, max.lastReceivedAt - started)),
        latency: summarize(max.latencies),
        cost: perMessage(burstRun.cost, max.received),
      };
      ctx.log(`async max: ${JSON.stringify(maxResult)}`);

      await fleet.reset();
      const rate = Math.max(10, Math.floor(maxResult.deliveriesPerS / 2));
      const pacedRun = await measureCpu(pushline.processes(), async () => {
        const n = await publishPaced(producer, topic, ids, rate, paceMs);
        return { paced: n, stats: await drain(fleet, n) };
      });
      const { paced, stats: half } = pacedRun.value;
      const halfResult: PhaseResult = {
        published: paced,
        received: half.received,
        deliveriesPerS: perSecond(half.received, paceMs),
        latency: summarize(half.latencies),
        cost: perMessage(pacedRun.cost, half.received),
      };
      ctx.log(`async half (${rate}/s): ${JSON.stringify(halfResult)}`);
      const lost = (r: PhaseResult) => Math.max(0, r.published - r.received);
      return {
        rows: [
          row(
            'async.max_deliveries_per_s',
            `max: deliveries/s (${burst} published at once)`,
            'msg/s',
            { pushline: maxResult.deliveriesPerS },
            'higher',
          ),
          row(
            'async.max_p50',
            'max: publish → device ack p50',
            'ms',
            { pushline: maxResult.latency.p50 },
            'lower',
          ),
          row(
            'async.max_p99',
            'max: publish → device ack p99',
            'ms',
            { pushline: maxResult.latency.p99 },
            'lower',
          ),
          row(
            'async.max_cpu',
            'max: platform CPU per delivery (all processes)',
            'µs',
            { pushline: maxResult.cost.cpuUs },
            'lower',
          ),
          row(
            'async.max_cpu_jit',
            'max: of it, the Kafka broker compiling its own code (JIT)',
            'µs',
            { pushline: maxResult.cost.jitUs },
            'lower',
          ),
          row('async.half_rate', 'half of max: offered rate', 'msg/s', { pushline: rate }, 'higher'),
          row(
            'async.half_p50',
            'half of max: publish → device ack p50',
            'ms',
            { pushline: halfResult.latency.p50 },
            'lower',
          ),
          row(
            'async.half_p99',
            'half of max: publish → device ack p99',
            'ms',
            { pushline: halfResult.latency.p99 },
            'lower',
          ),
          row(
            'async.lost',
            'not received (both phases)',
            'msgs',
            { pushline: lost(maxResult) + lost(halfResult) },
            'lower',
          ),
        ],
        charts: [
          {
            title: 'Async path: publish → device ack',
            unit: 'ms',
            kind: 'latency',
            bars: (['p50', 'p95', 'p99'] as const).flatMap((q) => [
              { group: q, series: 'max load', value: maxResult.latency[q] },
              { group: q, series: `half (${rate}/s)`, value: halfResult.latency[q] },
            ]),
          },
        ],
        notes: [
          `${devices} devices over ${pushline.deviceUrls.length} connection servers; records keyed by target, produced with acks=all in batches of ${BATCH}.`,
          'Latency is the producer handing the batch to Kafka → the device acking; it includes the produce round trip, consumption, registry lookup and delivery.',
          'No baseline: plain socket.io has no async path.',
        ],
        details: { max: maxResult, half: { ...halfResult, offeredPerS: rate } },
      };
    });
  },
};

/** Records `from`..`from + count - 1`, record i to `ids[i % ids.length]`, each with its send time. */
function records(ids: readonly string[], from: number, count: number): OutgoingRecord[] {
  const t0 = nowMs();
  const createdAt = Date.now();
  return Array.from({ length: count }, (_, k) => {
    const i = from + k;
    const request: PushRequest = {
      v: 1,
      id: `async-${process.pid}-${i}-${Math.floor(t0)}`,
      target: { type: 'device', id: ids[i % ids.length] as string },
      payload: { t0 },
      createdAt,
    };
    return { key: pushTargetKey(request.target), value: JSON.stringify(request) };
  });
}

export async function publishBurst(
  producer: Producer,
  topic: string,
  ids: readonly string[],
  count: number,
): Promise<number> {
  const inFlight = new Set<Promise<void>>();
  for (let sent = 0; sent < count; sent += BATCH) {
    const p = producer
      .send(topic, records(ids, sent, Math.min(BATCH, count - sent)))
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (inFlight.size >= MAX_BATCHES_IN_FLIGHT) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  return count;
}

/** Offers `ratePerS` for `durationMs` in 50 ms slices, each one batch, without waiting on acks. */
export async function publishPaced(
  producer: Producer,
  topic: string,
  ids: readonly string[],
  ratePerS: number,
  durationMs: number,
): Promise<number> {
  const sliceMs = 50;
  const inFlight = new Set<Promise<void>>();
  const started = nowMs();
  let sent = 0;
  while (nowMs() - started < durationMs) {
    const due = Math.floor(((nowMs() - started + sliceMs) * ratePerS) / 1000);
    if (due > sent) {
      const p = producer.send(topic, records(ids, sent, due - sent)).finally(() => inFlight.delete(p));
      inFlight.add(p);
      sent = due;
    }
    // Pacing: the next slice is due in sliceMs.
    await sleep(sliceMs);
  }
  await Promise.all(inFlight);
  return sent;
}

/** Waits until `expected` receipts, or until receipts stop growing for 10 s. */
export async function drain(fleet: DeviceFleet, expected: number) {
  let last = -1;
  let lastChange = nowMs();
  const done = await pollUntil(
    () => fleet.stats(),
    (s) => {
      if (s.received !== last) {
        last = s.received;
        lastChange = nowMs();
      }
      return s.received >= expected || nowMs() - lastChange > 10_000;
    },
    180_000,
    100,
  );
  return done.value;
}
