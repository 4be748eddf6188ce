import { parseArgs } from 'node:util';
import { z } from 'zod';

export const ALL_SCENARIOS = [1, 2, 3, 4, 5, 6] as const;

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
}

/** A single server process holds at most ~19.9k sockets here; 18k keeps a margin for Redis, Kafka and HTTP. */
export const MAX_DEVICES_PER_SERVER = 18_000;

const Flags = z.object({
  scenarios: z
    .string()
    .regex(/^[1-6](,[1-6])*$/, 'a comma-separated list of scenario numbers 1-6')
    .optional(),
  devices: z.coerce.number().int().min(2).max(MAX_DEVICES_PER_SERVER).optional(),
  // The storm target is stated for 19k devices on one server, right under the 20k open-files limit.
  'storm-devices': z.coerce.number().int().min(2).max(19_500).optional(),
  // Each survivor is one process under the 20k open-files limit: 19k devices need at least two.
  'storm-survivors': z.coerce.number().int().min(1).max(4).optional(),
  smoke: z.boolean().optional(),
  profile: z.boolean().optional(),
  out: z.string().optional(),
});

export const USAGE = `usage: npm run bench -- [--scenarios=1,2,5] [--devices=N] [--storm-devices=N] [--storm-survivors=N] [--smoke] [--profile] [--out=DIR]
  1 capacity   2 direct push   3 async path (Kafka)   4 fan-out   5 device-to-device   6 reconnect storm
  --devices        idle devices in scenario 1 (default 10000, smoke 40, max ${MAX_DEVICES_PER_SERVER})
  --storm-devices  devices on the killed server in scenario 6 (default: --devices)
  --storm-survivors  live servers taking the reconnects in scenario 6 (default 2, max 4)
  --smoke          tiny sizes, a few seconds per scenario (CI)
  --profile        --cpu-prof the services; profiles land next to the service logs
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
    stormDevices: flags['storm-devices'] ?? devices,
    stormSurvivors: flags['storm-survivors'] ?? 2,
    smoke,
    outDir: flags.out ?? defaultOutDir,
    profile: flags.profile ?? false,
  };
}
