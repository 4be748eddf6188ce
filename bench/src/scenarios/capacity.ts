import { row, type Row } from '../report/model.ts';
import { perSecond, round } from '../stats.ts';
import type { PushlineTarget } from '../targets/pushline.ts';
import type { Target } from '../targets/types.ts';
import { measureCpu, perMessage, type PerMessageCost } from '../targets/memory.ts';
import { countRegistered, pollUntil, settledMemory, sideBySide, withFleet } from './common.ts';
import type { Scenario, ScenarioContext, ScenarioOutput } from './types.ts';

interface CapacityMeasure {
  readonly connected: number;
  readonly failed: number;
  readonly connectPerS: number;
  readonly rssPerConnKb: number;
  readonly heapPerConnKb: number | null;
  readonly registryWritesPerS: number | null;
  readonly errors: Record<string, number>;
  /** Server-side CPU per connect (handshake, auth, registry, events), all processes. */
  readonly cpuUsPerConnect: number;
  readonly connectCost: PerMessageCost;
}

/** Scenario 1: N idle devices on one server process; memory per connection and connect rate. */
export const capacity: Scenario = {
  id: 1,
  name: 'capacity',
  title: 'Connection capacity: idle devices on one server',
  timeoutMs: (o) => 120_000 + o.devices * 30,
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const n = ctx.options.devices;
    const measured: Partial<Record<Target['name'], CapacityMeasure>> = {};
    for (const target of sideBySide(ctx)) {
      measured[target.name] = await measure(ctx, target, n);
      ctx.log(`capacity ${target.name}: ${JSON.stringify(measured[target.name])}`);
    }
    const b = measured.baseline;
    const p = measured.pushline;
    const rows: Row[] = [
      row(
        'capacity.connected',
        `devices connected (of ${n})`,
        'devices',
        { baseline: b?.connected, pushline: p?.connected },
        'higher',
      ),
      row(
        'capacity.rss_per_conn',
        'RSS per idle connection',
        'KB',
        { baseline: b?.rssPerConnKb, pushline: p?.rssPerConnKb },
        'lower',
      ),
      row(
        'capacity.heap_per_conn',
        'JS heap per idle connection',
        'KB',
        { baseline: b?.heapPerConnKb, pushline: p?.heapPerConnKb },
        'lower',
      ),
      row(
        'capacity.connect_rate',
        'connect rate (handshake + auth)',
        'conn/s',
        { baseline: b?.connectPerS, pushline: p?.connectPerS },
        'higher',
      ),
      row(
        'capacity.cpu_per_connect',
        'server CPU per connect (all processes)',
        'µs',
        { baseline: b?.cpuUsPerConnect, pushline: p?.cpuUsPerConnect },
        'lower',
      ),
      row(
        'capacity.registry_rate',
        'registry write rate (connect → visible in Redis)',
        'writes/s',
        { pushline: p?.registryWritesPerS },
        'higher',
      ),
    ];
    return {
      rows,
      charts: [
        {
          title: 'Memory per idle connection',
          unit: 'KB',
          kind: 'memory',
          bars: (
            [
              ['RSS', 'baseline', b?.rssPerConnKb],
              ['RSS', 'pushline', p?.rssPerConnKb],
              ['JS heap', 'baseline', b?.heapPerConnKb],
              ['JS heap', 'pushline', p?.heapPerConnKb],
            ] as const
          ).flatMap(([group, series, value]) => (value == null ? [] : [{ group, series, value }])),
        },
      ],
      notes: [
        'Memory is the server process delta between before and after connecting, after settling: median RSS (from /proc) and lowest heap of five samples 400 ms apart.',
        'Both servers hold only the devices; the generators run in separate processes.',
      ],
      details: { baseline: b, pushline: p },
    };
  },
};

async function measure(ctx: ScenarioContext, target: Target, n: number): Promise<CapacityMeasure> {
  const before = await settledMemory(target, 0);
  return withFleet(ctx, `cap-${target.name}`, n, async (fleet, ids) => {
    const started = performance.now();
    const registered =
      target.name === 'pushline'
        ? waitRegistered(target as PushlineTarget, ids, started)
        : Promise.resolve(null);
    const { value, cost } = await measureCpu(target.processes(), async () => {
      const c = await fleet.connect({ urls: target.deviceUrls, pin: 0 });
      return { connect: c, registryMs: await registered };
    });
    const { connect, registryMs } = value;
    const connectCost = perMessage(cost, connect.connected);
    const after = await settledMemory(target, 0);
    const per = (bytes: number) => round(bytes / Math.max(1, connect.connected) / 1024, 2);
    return {
      connected: connect.connected,
      failed: connect.failed,
      connectPerS: perSecond(connect.connected, connect.ms),
      rssPerConnKb: per(after.rssBytes - before.rssBytes),
      heapPerConnKb:
        after.heapUsedBytes === undefined || before.heapUsedBytes === undefined
          ? null
          : per(after.heapUsedBytes - before.heapUsedBytes),
      registryWritesPerS: registryMs === null ? null : perSecond(ids.length, registryMs),
      cpuUsPerConnect: connectCost.cpuUs,
      connectCost,
      errors: connect.errors,
    };
  });
}

/** Milliseconds from `started` until every device is in the registry, or null if that never happens. */
async function waitRegistered(
  pushline: PushlineTarget,
  ids: string[],
  started: number,
): Promise<number | null> {
  const result = await pollUntil(
    () => countRegistered(pushline, ids),
    (count) => count >= ids.length,
    60_000 + ids.length * 5,
    200,
  );
  return result.reached ? performance.now() - started : null;
}
