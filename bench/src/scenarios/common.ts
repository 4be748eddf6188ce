import { setTimeout as sleep } from 'node:timers/promises';
import { registryKeys } from '@pushline/registry';
import { DeviceFleet } from '../load/fleet.ts';
import { benchDevices } from '../tokens.ts';
import type { MemorySample, Target } from '../targets/types.ts';
import type { PushlineTarget } from '../targets/pushline.ts';
import { ScenarioSkipped, type ScenarioContext } from './types.ts';

/** Signs tokens for `count` fresh devices, starts their generators, runs `fn`, and always closes them. */
export async function withFleet<T>(
  ctx: ScenarioContext,
  label: string,
  count: number,
  fn: (fleet: DeviceFleet, ids: string[]) => Promise<T>,
): Promise<T> {
  const devices = benchDevices(label, count);
  const creds = await ctx.signer.signMany(devices);
  const fleet = DeviceFleet.create(label, creds);
  try {
    return await fn(
      fleet,
      devices.map((d) => d.id),
    );
  } finally {
    await fleet.close();
  }
}

/**
 * Polls `probe` until `done` holds or the deadline passes; returns the last value and when it
 * was reached. Polling, not sleeping: the loop ends as soon as the condition is observed.
 */
export async function pollUntil<T>(
  probe: () => Promise<T>,
  done: (value: T) => boolean,
  timeoutMs: number,
  intervalMs = 100,
): Promise<{ value: T; reached: boolean; atMs: number }> {
  const started = performance.now();
  for (;;) {
    const value = await probe();
    const atMs = performance.now() - started;
    if (done(value)) return { value, reached: true, atMs };
    if (atMs >= timeoutMs) return { value, reached: false, atMs };
    await sleep(intervalMs);
  }
}

/**
 * Memory of a server process after it settles: the lowest heap of a few samples (closest to the
 * live set, as GC runs between them) and the median RSS. Both targets are sampled the same way.
 */
export async function settledMemory(
  target: Target,
  index: number,
  samples = 5,
  gapMs = 400,
): Promise<MemorySample> {
  const taken: MemorySample[] = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(gapMs);
    taken.push(await target.memory(index));
  }
  const rss = taken.map((s) => s.rssBytes).sort((a, b) => a - b);
  const heaps = taken.flatMap((s) => (s.heapUsedBytes === undefined ? [] : [s.heapUsedBytes]));
  return {
    rssBytes: rss[Math.floor(rss.length / 2)] ?? 0,
    heapUsedBytes: heaps.length > 0 ? Math.min(...heaps) : undefined,
  };
}

/** How many of `ids` the registry lists, optionally only those on `serverId`. */
export async function countRegistered(
  pushline: PushlineTarget,
  ids: readonly string[],
  serverId?: string,
): Promise<number> {
  let n = 0;
  for (let i = 0; i < ids.length; i += 1000) {
    const records = await pushline.registry.lookupMany(ids.slice(i, i + 1000));
    for (const r of records) if (r && (serverId === undefined || r.serverId === serverId)) n++;
  }
  return n;
}

/**
 * Counts the members added to the given connection servers' device sets since it was made, one
 * SCARD per server. The registry writes a device's set member in the same script as its record,
 * so the count is what is visible in Redis, at a cost that does not grow with the devices: reading
 * their records instead, inside a CPU window, was charged to what it measured
 * (docs/performance.md, "What the bench charged that is not the platform's").
 */
export async function registrationsOn(
  pushline: PushlineTarget,
  serverIds: readonly string[],
): Promise<() => Promise<number>> {
  const keys = registryKeys(pushline.keyPrefix);
  const sets = serverIds.map((id) => keys.server(id));
  const count = async () =>
    (await Promise.all(sets.map((k) => pushline.redis.scard(k)))).reduce((a, b) => a + b, 0);
  const before = await count();
  return async () => (await count()) - before;
}

export function requirePushline(ctx: ScenarioContext): PushlineTarget {
  if (!ctx.pushline) throw new ScenarioSkipped(ctx.pushlineUnavailable ?? 'the platform is not running');
  return ctx.pushline;
}

/** The targets a side-by-side scenario runs against, baseline first. */
export function sideBySide(ctx: ScenarioContext): Target[] {
  return [ctx.baseline, ctx.pushline].filter((t): t is Target => t !== undefined);
}

export interface TargetFleet {
  readonly target: Target;
  readonly fleet: DeviceFleet;
  readonly ids: string[];
}

/**
 * One fleet per side-by-side target, all open at once, so a scenario can alternate between
 * targets level by level: on a shared machine, numbers measured seconds apart see the same noise.
 */
export async function withTargetFleets<T>(
  ctx: ScenarioContext,
  prefix: string,
  count: number,
  fn: (fleets: TargetFleet[]) => Promise<T>,
): Promise<T> {
  const targets = sideBySide(ctx);
  const open = async (i: number, acc: TargetFleet[]): Promise<T> => {
    const target = targets[i];
    if (!target) return fn(acc);
    return withFleet(ctx, `${prefix}-${target.name}`, count, (fleet, ids) =>
      open(i + 1, [...acc, { target, fleet, ids }]),
    );
  };
  return open(0, []);
}
