import { parseArgs } from 'node:util';
import { z } from 'zod';

export const ALL_SCENARIOS = [1, 2, 3, 4, 5, 6, 7, 8, 9] as const;

export interface BenchOptions {
  readonly scenarios: readonly number[];
  /** Idle devices of the capacity scenario; other scenarios derive their sizes from it. */
  readonly devices: number;
  /** Devices on the server killed in the reconnect storm. */
  readonly stormDevices: number;
  /** Live servers that take the reconnects in scenario 6. */
  readonly stormSurvivors: number;
  /** Tiny sizes and seconds-long phases, to keep the harness alive in CI. */
  readonly smoke: boolean;
  readonly outDir: string;
  /** Write V8 CPU profiles of the services into <out>/tmp/<run>/profiles. */
  readonly profile: boolean;
  /** Heap snapshots of one connection server and of the baseline around scenario 1's connects. */
  readonly heapSnapshot: boolean;
}

/** A single server process holds at most ~19.9k sockets here; 18k keeps a margin for Redis, Kafka and HTTP. */
export const MAX_DEVICES_PER_SERVER = 18_000;

/** Scenario 1 spreads devices over ceil(N / this) connection servers; the baseline runs at most this many. */
export const CAPACITY_DEVICES_PER_SERVER = 16_000;

/** Scenario 1's ceiling: four connection servers and six load generators on this machine. */
const MAX_CAPACITY_DEVICES = 50_000;

const Flags = z.object({
  scenarios: z
    .string()
    .regex(/^[1-9](,[1-9])*$/, 'a comma-separated list of scenario numbers 1-9')
    .optional(),
  devices: z.coerce.number().int().min(2).max(MAX_CAPACITY_DEVICES).optional(),
  // The storm target is stated for 19k devices on one server, right under the 20k open-files limit.
  'storm-devices': z.coerce.number().int().min(2).max(19_500).optional(),
  // Each survivor is one process under the 20k open-files limit: 19k devices need at least two.
  'storm-survivors': z.coerce.number().int().min(1).max(4).optional(),
  smoke: z.boolean().optional(),
  profile: z.boolean().optional(),
  'heap-snapshot': z.boolean().optional(),
  out: z.string().optional(),
});

export const USAGE = `usage: npm run bench -- [--scenarios=1,2,5] [--devices=N] [--storm-devices=N] [--storm-survivors=N] [--smoke] [--profile] [--heap-snapshot] [--out=DIR]
  1 capacity   2 direct push   3 async path (Kafka)   4 fan-out   5 device-to-device   6 reconnect storm
  7 async path with 5% of devices never acking
  8 Redis restart (registry restore)
  9 capacity inputs (registry bytes and writes per device, connection-event bytes; docs/scaling.md)
  --devices        idle devices in scenario 1 (default 10000, smoke 40, max ${MAX_CAPACITY_DEVICES}); above
                   ${CAPACITY_DEVICES_PER_SERVER} they spread over several connection servers and the baseline runs ${CAPACITY_DEVICES_PER_SERVER}.
                   Fan-out takes min(N, ${MAX_DEVICES_PER_SERVER}); the Redis restart 2 × min(N/2, 9500).
  --storm-devices  devices on the killed server in scenario 6 (default: min(--devices, ${MAX_DEVICES_PER_SERVER}))
  --storm-survivors  live servers taking the reconnects in scenario 6 (default 2, max 4)
  --smoke          tiny sizes, a few seconds per scenario (CI)
  --profile        --cpu-prof the services; profiles land next to the service logs
  --heap-snapshot  heap snapshots of one connection server and the baseline before and after
                   scenario 1 connects, summarized per connection (bench/src/tools/heap-summary.ts)
  --out            results directory (default bench/results)`;

export function parseOptions(argv: readonly string[], defaultOutDir: string): BenchOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      scenarios: { type: 'string' },
      devices: { type: 'string' },
      'storm-devices': { type: 'string' },
      'storm-survivors': { type: 'string' },
      smoke: { type: 'boolean' },
      profile: { type: 'boolean' },
      'heap-snapshot': { type: 'boolean' },
      out: { type: 'string' },
    },
    strict: true,
  });
  const flags = Flags.parse(values);
  const smoke = flags.smoke ?? false;
  const devices = flags.devices ?? (smoke ? 40 : 10_000);
  return {
    scenarios: flags.scenarios
      ? [...new Set(flags.scenarios.split(',').map(Number))].sort()
      : [...ALL_SCENARIOS],
    devices,
    stormDevices: flags['storm-devices'] ?? Math.min(devices, MAX_DEVICES_PER_SERVER),
    stormSurvivors: flags['storm-survivors'] ?? 2,
    smoke,
    outDir: flags.out ?? defaultOutDir,
    profile: flags.profile ?? false,
    heapSnapshot: flags['heap-snapshot'] ?? false,
  };
}
