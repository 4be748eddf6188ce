import { readFile } from 'node:fs/promises';
import { CAPACITY_DEVICES_PER_SERVER } from '../options.ts';
import { row, type Row } from '../report/model.ts';
import { perSecond, round } from '../stats.ts';
import type { PushlineTarget } from '../targets/pushline.ts';
import type { MemorySample, Target } from '../targets/types.ts';
import {
  constructorTotals,
  formatPerConnection,
  perConnection,
  type PerConnectionRow,
} from '../tools/heap-summary.ts';
import { measureCpu, perMessage, type PerMessageCost } from '../targets/memory.ts';
import { pollUntil, registrationsOn, settledMemory, sideBySide, withFleet } from './common.ts';
import type { Scenario, ScenarioContext, ScenarioOutput } from './types.ts';

interface ServerMemory {
  readonly server: string;
  readonly devices: number;
  readonly rssDeltaBytes: number;
  readonly heapDeltaBytes: number | null;
  readonly rssPerConnKb: number;
  readonly heapPerConnKb: number | null;
}

interface CapacityMeasure {
  readonly devices: number;
  readonly servers: number;
  readonly connected: number;
  readonly failed: number;
  readonly connectPerS: number;
  /** Sum of the servers' RSS deltas over every connected device. */
  readonly rssPerConnKb: number;
  readonly heapPerConnKb: number | null;
  readonly perServer: ServerMemory[];
  readonly registryWritesPerS: number | null;
  readonly errors: Record<string, number>;
  /** Server-side CPU per connect (handshake, auth, registry, events), all processes. */
  readonly cpuUsPerConnect: number;
  readonly connectCost: PerMessageCost;
  readonly heap?: HeapBreakdown;
}

interface HeapBreakdown {
  readonly server: string;
  readonly devices: number;
  readonly files: { before: string; after: string };
  readonly selfBytesPerConn: number;
  readonly top: PerConnectionRow[];
}

const TOP_CONSTRUCTORS = 15;

/**
 * Scenario 1: N idle devices; memory per connection and connect rate. The baseline is one process
 * and holds at most CAPACITY_DEVICES_PER_SERVER; Pushline spreads N over as many connection
 * servers as that limit needs, so both report memory per connection.
 */
export const capacity: Scenario = {
  id: 1,
  name: 'capacity',
  title: 'Connection capacity: idle devices (one baseline process; Pushline over ⌈N/16k⌉ servers)',
  timeoutMs: (o) => 120_000 + o.devices * 30 + (o.heapSnapshot ? 240_000 : 0),
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const n = ctx.options.devices;
    const sizes: Record<Target['name'], number> = {
      baseline: Math.min(n, CAPACITY_DEVICES_PER_SERVER),
      pushline: n,
    };
    const measured: Partial<Record<Target['name'], CapacityMeasure>> = {};
    for (const target of sideBySide(ctx)) {
      measured[target.name] = await measure(ctx, target, sizes[target.name]);
      ctx.log(`capacity ${target.name}: ${JSON.stringify({ ...measured[target.name], heap: undefined })}`);
      const heap = measured[target.name]?.heap;
      if (heap)
        ctx.log(
          `capacity ${target.name} heap (${heap.server}, ${heap.devices} devices):\n${formatPerConnection({ totalBytes: heap.selfBytesPerConn, rows: heap.top }, heap.devices, TOP_CONSTRUCTORS)}`,
        );
    }
    const b = measured.baseline;
    const p = measured.pushline;
    // Rows compare per-connection numbers; when the sizes differ, the label says so.
    const differ = b !== undefined && p !== undefined && b.devices !== p.devices;
    const sizeNote = differ
      ? ` (baseline ${b.devices} on 1 process; pushline ${p.devices} over ${p.servers} servers)`
      : '';
    const rows: Row[] = [
      {
        ...row(
          'capacity.connected',
          differ
            ? `devices connected (baseline of ${b.devices}, pushline of ${p.devices})`
            : `devices connected (of ${n})`,
          'devices',
          { baseline: b?.connected, pushline: p?.connected },
          'higher',
        ),
        // Different sizes: a ratio of counts would say nothing.
        ...(differ ? { ratio: null } : {}),
      },
      row(
        'capacity.rss_per_conn',
        `RSS per idle connection${sizeNote}`,
        'KB',
        { baseline: b?.rssPerConnKb, pushline: p?.rssPerConnKb },
        'lower',
      ),
      row(
        'capacity.heap_per_conn',
        `JS heap per idle connection${sizeNote}`,
        'KB',
        { baseline: b?.heapPerConnKb, pushline: p?.heapPerConnKb },
        'lower',
      ),
      row(
        'capacity.connect_rate',
        `connect rate (handshake + auth)${sizeNote}`,
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
        'capacity.cpu_per_connect_jit',
        'of it, the Kafka broker compiling its own code (JIT)',
        'µs',
        { pushline: p?.connectCost.jitUs },
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
    if (b?.heap || p?.heap)
      rows.push(
        row(
          'capacity.heap_snapshot_per_conn',
          'JS heap self size per connection (heap snapshot diff, one server)',
          'B',
          { baseline: b?.heap?.selfBytesPerConn, pushline: p?.heap?.selfBytesPerConn },
          'lower',
        ),
      );
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
        'Memory is each server process delta between before and after connecting, after settling: median RSS (from /proc) and lowest heap of five samples 400 ms apart. Per connection is the sum of the deltas over all connected devices.',
        `Pushline spreads devices round-robin over ⌈N/${CAPACITY_DEVICES_PER_SERVER}⌉ connection servers; the baseline is one process and runs min(N, ${CAPACITY_DEVICES_PER_SERVER}) devices, so its counts and rates are for that size.`,
        'The servers hold only the devices; the generators run in separate processes (at most 9k sockets each).',
        ...(ctx.options.heapSnapshot
          ? [
              'Heap snapshots are taken after the memory samples (before: ahead of the "before" sample); the per-constructor breakdown is in details.<target>.heap.',
            ]
          : []),
      ],
      details: { baseline: b, pushline: p },
    };
  },
};

async function measure(ctx: ScenarioContext, target: Target, n: number): Promise<CapacityMeasure> {
  const serverCount = target.name === 'pushline' ? Math.ceil(n / CAPACITY_DEVICES_PER_SERVER) : 1;
  const urls = await deviceUrls(ctx, target, serverCount);
  const indexes = urls.map((_, i) => i);
  const snapshot = ctx.options.heapSnapshot ? target.heapSnapshot?.bind(target) : undefined;
  const beforeFile = snapshot ? await snapshot(0, `${target.name}-before`) : undefined;
  const before = await Promise.all(indexes.map((i) => settledMemory(target, i)));
  const registrations =
    target.name === 'pushline'
      ? await registrationsOn(
          target as PushlineTarget,
          (target as PushlineTarget).servers.slice(0, urls.length).map((s) => s.serverId),
        )
      : undefined;
  return withFleet(ctx, `cap-${target.name}`, n, async (fleet, ids) => {
    const started = performance.now();
    const registered = registrations
      ? waitRegistered(registrations, ids.length, started)
      : Promise.resolve(null);
    const { value, cost } = await measureCpu(target.processes(), async () => {
      // Without a pin, device k of each generator goes to urls[k % urls.length]: an even spread.
      const c = await fleet.connect(urls.length === 1 ? { urls, pin: 0 } : { urls });
      return { connect: c, registryMs: await registered };
    });
    const { connect, registryMs } = value;
    const connectCost = perMessage(cost, connect.connected);
    const after = await Promise.all(indexes.map((i) => settledMemory(target, i)));
    const onServer = await devicesPerServer(target, ids, urls.length, connect.connected);
    const per = (bytes: number, devices: number) => round(bytes / Math.max(1, devices) / 1024, 2);
    const perServer = indexes.map((i): ServerMemory => {
      const b = before[i] as MemorySample;
      const a = after[i] as MemorySample;
      const heapDelta =
        a.heapUsedBytes === undefined || b.heapUsedBytes === undefined
          ? null
          : a.heapUsedBytes - b.heapUsedBytes;
      const devices = onServer[i] ?? 0;
      return {
        server:
          target.name === 'pushline'
            ? ((target as PushlineTarget).servers[i]?.serverId ?? `#${i}`)
            : 'baseline',
        devices,
        rssDeltaBytes: a.rssBytes - b.rssBytes,
        heapDeltaBytes: heapDelta,
        rssPerConnKb: per(a.rssBytes - b.rssBytes, devices),
        heapPerConnKb: heapDelta === null ? null : per(heapDelta, devices),
      };
    });
    const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);
    const heapDeltas = perServer.map((s) => s.heapDeltaBytes);
    let heap: HeapBreakdown | undefined;
    if (snapshot && beforeFile) {
      const afterFile = await snapshot(0, `${target.name}-after`);
      const devices = onServer[0] ?? 0;
      const summary = perConnection(
        constructorTotals(await readFile(afterFile, 'utf8')),
        constructorTotals(await readFile(beforeFile, 'utf8')),
        devices,
      );
      heap = {
        server: perServer[0]?.server ?? '',
        devices,
        files: { before: beforeFile, after: afterFile },
        selfBytesPerConn: Math.round(summary.totalBytes),
        top: summary.rows.slice(0, TOP_CONSTRUCTORS).map((r) => ({
          constructorName: r.constructorName,
          count: round(r.count, 2),
          bytes: Math.round(r.bytes),
        })),
      };
    }
    return {
      devices: n,
      servers: urls.length,
      connected: connect.connected,
      failed: connect.failed,
      connectPerS: perSecond(connect.connected, connect.ms),
      rssPerConnKb: per(sum(perServer.map((s) => s.rssDeltaBytes)), connect.connected),
      heapPerConnKb: heapDeltas.some((h) => h === null)
        ? null
        : per(sum(heapDeltas.map((h) => h ?? 0)), connect.connected),
      perServer,
      registryWritesPerS: registryMs === null ? null : perSecond(ids.length, registryMs),
      cpuUsPerConnect: connectCost.cpuUs,
      connectCost,
      errors: connect.errors,
      ...(heap ? { heap } : {}),
    };
  });
}

/** The first `count` device URLs of the target, starting Pushline connection servers it lacks. */
async function deviceUrls(ctx: ScenarioContext, target: Target, count: number): Promise<string[]> {
  if (target.name !== 'pushline') return target.deviceUrls.slice(0, count);
  const pushline = target as PushlineTarget;
  while (pushline.servers.length < count) {
    const added = await pushline.addConnectionServer();
    ctx.log(`capacity: started ${added.serverId} for ${ctx.options.devices} devices`);
  }
  return pushline.servers.slice(0, count).map((s) => s.deviceUrl);
}

/**
 * Devices each server holds. Pushline: from the registry (what the platform itself believes);
 * the baseline has one process, which holds every connected device.
 */
async function devicesPerServer(
  target: Target,
  ids: readonly string[],
  servers: number,
  connected: number,
): Promise<number[]> {
  if (target.name !== 'pushline' || servers === 1) return [connected];
  const pushline = target as PushlineTarget;
  const byServer = new Map<string, number>();
  for (let i = 0; i < ids.length; i += 1000) {
    const records = await pushline.registry.lookupMany(ids.slice(i, i + 1000));
    for (const r of records) if (r) byServer.set(r.serverId, (byServer.get(r.serverId) ?? 0) + 1);
  }
  return pushline.servers.slice(0, servers).map((s) => byServer.get(s.serverId) ?? 0);
}

/** Milliseconds from `started` until `devices` more are in the registry, or null if that never happens. */
async function waitRegistered(
  registered: () => Promise<number>,
  devices: number,
  started: number,
): Promise<number | null> {
  const result = await pollUntil(registered, (count) => count >= devices, 60_000 + devices * 5, 50);
  return result.reached ? performance.now() - started : null;
}
