import { join } from 'node:path';
import { z } from 'zod';
import { closeOnce } from '@pushline/runtime';
import { spawnAnnounced } from './child.ts';
import { heapSnapshotNodeOptions, nodeOptions, takeHeapSnapshot } from './heap-snapshot.ts';
import { readRssBytes } from './memory.ts';
import type { BroadcastAnswer, MemorySample, Target } from './types.ts';

const BASELINE_SCRIPT = new URL('../../baseline/src/main.ts', import.meta.url);
const Listening = z.object({ event: z.literal('listening'), port: z.number().int(), pid: z.number().int() });
const Stats = z.object({
  connections: z.number(),
  rssBytes: z.number(),
  heapUsedBytes: z.number(),
  eventLoopDelayMaxMs: z.number(),
  eventLoopDelayP99Ms: z.number(),
});
const Broadcast = z.object({ delivered: z.number(), latencyMs: z.number() });

/** The plain socket.io + express server of bench/baseline, as its own process on a free port. */
export async function startBaselineTarget(opts: {
  jwtSecret: string;
  logDir: string;
  /** When set, the baseline writes `baseline.cpuprofile` here when it exits. */
  profileDir?: string;
  /** When set, the target offers heapSnapshot(), written here. */
  heapSnapshotDir?: string;
}): Promise<Target> {
  const { profileDir, heapSnapshotDir } = opts;
  const NODE_OPTIONS = nodeOptions(
    process.env['NODE_OPTIONS'],
    profileDir === undefined
      ? undefined
      : `--cpu-prof --cpu-prof-dir=${profileDir} --cpu-prof-name=baseline.cpuprofile`,
    heapSnapshotDir === undefined ? undefined : heapSnapshotNodeOptions(heapSnapshotDir),
  );
  const proc = await spawnAnnounced(
    BASELINE_SCRIPT,
    {
      ...process.env,
      ...(NODE_OPTIONS === '' ? {} : { NODE_OPTIONS }),
      BASELINE_JWT_SECRET: opts.jwtSecret,
      BASELINE_PORT: '0',
    },
    Listening,
    join(opts.logDir, 'baseline.log'),
  );
  const url = `http://127.0.0.1:${proc.announcement.port}`;
  return {
    name: 'baseline',
    deviceUrls: [url],
    async eventLoopDelay() {
      const stats = Stats.parse(await (await fetch(`${url}/stats`)).json());
      return { baseline: { maxMs: stats.eventLoopDelayMaxMs, p99Ms: stats.eventLoopDelayP99Ms } };
    },
    async memory(): Promise<MemorySample> {
      const res = await fetch(`${url}/stats`);
      const stats = Stats.parse(await res.json());
      return { rssBytes: await readRssBytes(proc.pid), heapUsedBytes: stats.heapUsedBytes };
    },
    processes: () => [{ name: 'baseline', pid: proc.pid }],
    ...(heapSnapshotDir === undefined
      ? {}
      : {
          heapSnapshot: (_index: number, label: string) =>
            takeHeapSnapshot({
              pid: proc.pid,
              dir: heapSnapshotDir,
              label,
              ping: async () => void (await (await fetch(`${url}/stats`)).arrayBuffer()),
            }),
        }),
    directPush: [
      {
        label: 'baseline emitWithAck',
        baseUrl: url,
        pathTemplate: '/push/{device}',
        headers: {},
        bodyTemplate: '{"payload":{"t0":{t0}}}',
      },
    ],
    async broadcast(topic: string, payload: unknown): Promise<BroadcastAnswer> {
      const res = await fetch(`${url}/broadcast/${encodeURIComponent(topic)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ payload }),
      });
      return Broadcast.parse(await res.json());
    },
    close: closeOnce(() => proc.stop()),
  };
}
