import type { Redis } from 'ioredis';
import { waitUntil } from './wait.ts';

/** What MONITOR reports of one command: its arguments (the name first) and its source (`lua` inside a script). */
export type MonitoredCommand = (args: readonly string[], source: string) => boolean;

/**
 * The commands Redis runs from now on that `keep` accepts, seen through a MONITOR connection of
 * `redis`. `take()` returns those since its previous call, once MONITOR has caught up: it sends a
 * marker command (a key under `markPrefix`) and waits until MONITOR reports it.
 */
export async function watchRedisCommands(redis: Redis, markPrefix: string, keep: MonitoredCommand) {
  const monitor = await redis.monitor();
  const seen: { args: string[]; kept: boolean }[] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    seen.push({ args, kept: keep(args, source) });
  });
  let marks = 0;
  return {
    async take(): Promise<string[][]> {
      const mark = `${markPrefix}mark:${++marks}`;
      await redis.exists(mark);
      await waitUntil(() => seen.some(({ args }) => args.includes(mark)), { what: 'MONITOR to catch up' });
      const at = seen.findIndex(({ args }) => args.includes(mark));
      return seen
        .splice(0, at + 1)
        .slice(0, at)
        .filter(({ kept }) => kept)
        .map(({ args }) => args);
    },
    close: () => monitor.disconnect(),
  };
}
