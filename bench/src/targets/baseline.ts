import { join } from 'node:path';
import { z } from 'zod';
import { closeOnce } from '@pushline/runtime';
import { spawnAnnounced } from './child.ts';
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
}): Promise<Target> {
  const profile =
    opts.profileDir === undefined
      ? {}
      : {
          NODE_OPTIONS: [
            process.env['NODE_OPTIONS'],
            `--cpu-prof --cpu-prof-dir=${opts.profileDir} --cpu-prof-name=baseline.cpuprofile`,
          ]
            .filter(Boolean)
            .join(' '),
        };
  const proc = await spawnAnnounced(
    BASELINE_SCRIPT,
    { ...process.env, ...profile, BASELINE_JWT_SECRET: opts.jwtSecret, BASELINE_PORT: '0' },
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
