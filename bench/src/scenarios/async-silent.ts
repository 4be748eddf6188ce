import type { DeviceFleet } from '../load/fleet.ts';
import { row } from '../report/model.ts';
import { measureCpu, perMessage } from '../targets/memory.ts';
import { nowMs, perSecond, summarize } from '../stats.ts';
import { drain, publishBurst, publishPaced } from './async-path.ts';
import { requirePushline, withFleet } from './common.ts';
import { ScenarioSkipped, type Scenario, type ScenarioContext, type ScenarioOutput } from './types.ts';

/** Share of the devices that never ack. */
const SILENT_SHARE = 0.05;

function plan(smoke: boolean) {
  return smoke ? { burst: 500, paceMs: 2000 } : { burst: 30_000, paceMs: 10_000 };
}

/**
 * The target list of scenario 7: `total` devices in publish order, every `1 / SILENT_SHARE`-th one
 * silent, so silent devices share partitions (and batches) with acking ones.
 */
function interleave(acking: readonly string[], silent: readonly string[]): string[] {
  const out: string[] = [];
  const every = Math.max(2, Math.round((acking.length + silent.length) / Math.max(1, silent.length)));
  let a = 0;
  let s = 0;
  while (a < acking.length || s < silent.length) {
    if ((out.length + 1) % every === 0 && s < silent.length) out.push(silent[s++] as string);
    else if (a < acking.length) out.push(acking[a++] as string);
    else out.push(silent[s++] as string);
  }
  return out;
}

/** How many of records 0..n-1 (record i to `targets[i % targets.length]`) go to acking devices. */
function ackingAmong(targets: readonly string[], silent: ReadonlySet<string>, n: number): number {
  const perRound = targets.filter((id) => !silent.has(id)).length;
  const rest = targets.slice(0, n % targets.length).filter((id) => !silent.has(id)).length;
  return Math.floor(n / targets.length) * perRound + rest;
}

/**
 * Scenario 7: scenario 3 with 5% of the devices never acking, the fleet any real deployment has
 * (docs/decisions/0017). Records go to all devices in turn, so every partition carries records
 * for silent devices, each of which holds its delivery for the full ack timeout. Latency and
 * rates are those of the acking devices: a record of theirs must not wait for a silent device.
 */
export const asyncSilent: Scenario = {
  id: 7,
  name: 'async-silent',
  title: 'Async path with 5% of devices never acking',
  timeoutMs: (o) => (o.smoke ? 90_000 : 300_000),
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const pushline = requirePushline(ctx);
    if (!pushline.hasProcessor) throw new ScenarioSkipped('services/message-processor has no main.ts yet');
    const { burst, paceMs } = plan(ctx.options.smoke);
    const devices = Math.min(ctx.options.devices, 1000);
    const silentCount = Math.max(1, Math.round(devices * SILENT_SHARE));
    const producer = await pushline.producer();
    const topic = pushline.topics.pushRequests;
    return withFleet(ctx, 'asyncack', devices - silentCount, (fleet, ackIds) =>
      withFleet(ctx, 'asyncsilent', silentCount, async (silentFleet: DeviceFleet, silentIds) => {
        await fleet.connect({ urls: pushline.deviceUrls });
        await silentFleet.connect({ urls: pushline.deviceUrls, silent: true });
        const targets = interleave(ackIds, silentIds);
        const silentSet = new Set(silentIds);
        const acking = (n: number) => ackingAmong(targets, silentSet, n);

        const warmUp = Math.min(burst, 1000);
        await publishBurst(producer, topic, targets, warmUp);
        await drain(fleet, acking(warmUp));
        await fleet.reset();

        const started = nowMs();
        const burstRun = await measureCpu(pushline.processes(), async () => {
          const n = await publishBurst(producer, topic, targets, burst);
          return { published: n, stats: await drain(fleet, acking(n)) };
        });
        const { published, stats: max } = burstRun.value;
        const maxResult = {
          published: acking(published),
          received: max.received,
          deliveriesPerS: perSecond(max.received, Math.max(1, max.lastReceivedAt - started)),
          latency: summarize(max.latencies),
          cost: perMessage(burstRun.cost, max.received),
        };
        ctx.log(`async-silent max: ${JSON.stringify(maxResult)}`);

        await fleet.reset();
        const rate = Math.max(10, Math.floor(maxResult.deliveriesPerS / 2));
        // Records to silent devices count in the offered rate: the acking share is 95% of it.
        const offered = Math.ceil(rate / (1 - SILENT_SHARE));
        const pacedRun = await measureCpu(pushline.processes(), async () => {
          const n = await publishPaced(producer, topic, targets, offered, paceMs);
          return { paced: n, stats: await drain(fleet, acking(n)) };
        });
        const { paced, stats: half } = pacedRun.value;
        const halfResult = {
          published: acking(paced),
          received: half.received,
          deliveriesPerS: perSecond(half.received, paceMs),
          latency: summarize(half.latencies),
          cost: perMessage(pacedRun.cost, half.received),
        };
        ctx.log(`async-silent half (${offered}/s offered): ${JSON.stringify(halfResult)}`);
        const silentReceived = (await silentFleet.stats()).received;
        const lost = (r: { published: number; received: number }) => Math.max(0, r.published - r.received);
        return {
          rows: [
            row(
              'async_silent.max_deliveries_per_s',
              `max: deliveries/s to acking devices (${burst} published at once)`,
              'msg/s',
              { pushline: maxResult.deliveriesPerS },
              'higher',
            ),
            row(
              'async_silent.max_p99',
              'max: publish → ack p99, acking devices',
              'ms',
              { pushline: maxResult.latency.p99 },
              'lower',
            ),
            row(
              'async_silent.half_rate',
              'half of max: deliveries/s to acking devices',
              'msg/s',
              { pushline: rate },
              'higher',
            ),
            row(
              'async_silent.half_p50',
              'half of max: publish → ack p50, acking devices',
              'ms',
              { pushline: halfResult.latency.p50 },
              'lower',
            ),
            row(
              'async_silent.half_p99',
              'half of max: publish → ack p99, acking devices',
              'ms',
              { pushline: halfResult.latency.p99 },
              'lower',
            ),
            row(
              'async_silent.silent_received',
              'messages the silent devices received (never acked)',
              'msgs',
              { pushline: silentReceived },
              'higher',
            ),
            row(
              'async_silent.lost',
              'not received by acking devices (both phases)',
              'msgs',
              { pushline: lost(maxResult) + lost(halfResult) },
              'lower',
            ),
          ],
          charts: [
            {
              title: 'Async path, 5% of devices never acking: publish → ack of the others',
              unit: 'ms',
              kind: 'latency',
              bars: (['p50', 'p95', 'p99'] as const).flatMap((q) => [
                { group: q, series: 'max load', value: maxResult.latency[q] },
                { group: q, series: `half (${rate}/s)`, value: halfResult.latency[q] },
              ]),
            },
          ],
          notes: [
            `${devices - silentCount} acking and ${silentCount} silent devices over ${pushline.deviceUrls.length} connection servers; every ${Math.round(devices / silentCount)}th record goes to a silent device, which holds it for the ack timeout.`,
            'Rates and latencies are those of the acking devices; scenario 3 is the same load with every device acking.',
          ],
          details: {
            max: maxResult,
            half: { ...halfResult, offeredPerS: offered },
            silentDevices: silentCount,
            silentReceived,
          },
        };
      }),
    );
  },
};
