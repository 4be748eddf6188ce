import { setTimeout as sleep } from 'node:timers/promises';
import type { Producer } from '@pushline/kafka';
import { pushTargetKey } from '@pushline/protocol';
import type { ChaosFleet } from './devices.ts';
import { POISON_HEADER, type Observer } from './observer.ts';
import type { ChaosPlatform, ConnectionServerRef } from './platform.ts';

export const SCENARIO_IDS = [
  'cs-kill',
  'processor-kill',
  'poison',
  'kafka-restart',
  'redis-restart-aof',
  'redis-restart',
  'cs-drain',
] as const;
export type ScenarioId = (typeof SCENARIO_IDS)[number];

export interface Sizes {
  readonly devices: number;
  readonly ratePerS: number;
  /** Traffic before the fault. */
  readonly warmupMs: number;
  /** How long a killed component stays down before the suite starts it again. */
  readonly downMs: number;
  /** The same for redis-server: long enough for the platform to notice it is gone. */
  readonly redisDownMs: number;
  /** Traffic after the component is back. */
  readonly afterMs: number;
  /** Longest the suite waits for the platform to be healthy again after the fault. */
  readonly recoveryDeadlineMs: number;
  /** Longest it waits, after the traffic stopped, for every accepted request to reach a terminal outcome. */
  readonly settleDeadlineMs: number;
  /** Quiet time once everything looks settled, to catch late second terminal events. */
  readonly quietMs: number;
  readonly ttlSeconds: number;
  readonly directTimeoutMs: number;
  /** Poison records per kind in the poison burst. */
  readonly poisonPerKind: number;
}

export interface Check {
  readonly name: string;
  readonly pass: boolean;
  readonly detail: string;
}

export interface ScenarioContext {
  readonly platform: ChaosPlatform;
  readonly fleet: ChaosFleet;
  readonly observer: Observer;
  readonly producer: Producer;
  readonly sizes: Sizes;
  readonly log: (line: string) => void;
}

/** What the injection did, in epoch ms. */
export interface Injection {
  readonly faultAt: number;
  /** When the suite had put back what it took away (the fault instant for faults with nothing to put back). */
  readonly restoredAt: number;
  readonly notes: string[];
  /** Checks that only this fault has; evaluated after the scenario settled. */
  readonly checks?: () => Check[];
}

export interface ChaosScenario {
  readonly id: ScenarioId;
  readonly title: string;
  /** Needs a Kafka broker the suite started (it kills it). */
  readonly ownKafka?: boolean;
  /** Devices the recovery probe's async canary goes to. */
  canaries?(ctx: ScenarioContext): string[];
  /** Before the traffic starts: bring the platform into the state the fault needs. */
  prepare?(ctx: ScenarioContext): Promise<string[]>;
  inject(ctx: ScenarioContext): Promise<Injection>;
}

/** Moves devices so that each server holds about the same number, and says how many moved. */
export async function balance(ctx: ScenarioContext): Promise<string[]> {
  const servers = ctx.platform.servers;
  const target = Math.ceil(ctx.fleet.devices.length / servers.length);
  const moved: string[] = [];
  for (const server of servers) {
    const extra = ctx.fleet.devices.filter((d) => d.serverId === server.serverId).slice(target);
    const fewest = () =>
      servers
        .filter((s) => s !== server)
        .map((s) => ({ s, n: ctx.fleet.devices.filter((d) => d.serverId === s.serverId).length }))
        .sort((a, b) => a.n - b.n)[0]?.s;
    const to = fewest();
    if (!to || extra.length === 0) continue;
    await ctx.fleet.move(extra, to);
    moved.push(`moved ${extra.length} devices from ${server.serverId} to ${to.serverId}`);
  }
  return moved;
}

const devicesOn = (ctx: ScenarioContext, server: ConnectionServerRef) =>
  ctx.fleet.devices.filter((d) => d.serverId === server.serverId).length;

/** Takes a service down with kill -9, keeps it down for downMs, starts it again. */
async function killAndRestart(
  ctx: ScenarioContext,
  service: { heldDown: boolean; kill(): Promise<void>; start(): Promise<void>; name: string },
  notes: string[],
): Promise<Injection> {
  service.heldDown = true;
  const faultAt = Date.now();
  await service.kill();
  ctx.log(`${service.name}: killed (SIGKILL)`);
  await sleep(ctx.sizes.downMs);
  await service.start();
  const restoredAt = Date.now();
  ctx.log(`${service.name}: started again after ${restoredAt - faultAt} ms`);
  return { faultAt, restoredAt, notes };
}

const csKill: ChaosScenario = {
  id: 'cs-kill',
  title: 'kill -9 of a connection server, then a restart with the same id and port',
  async inject(ctx) {
    const victim = ctx.platform.servers[0] as ConnectionServerRef;
    const held = devicesOn(ctx, victim);
    return killAndRestart(ctx, victim.service, [`${victim.serverId} held ${held} devices when killed`]);
  },
};

const processorKill: ChaosScenario = {
  id: 'processor-kill',
  title: 'kill -9 of the message processor, then a new instance',
  async inject(ctx) {
    return killAndRestart(ctx, ctx.platform.processor, [
      'the new instance has a new instance id (as a replaced pod); claim TTL is the default 60 s, group session timeout 6 s',
    ]);
  },
};

const kafkaRestart: ChaosScenario = {
  id: 'kafka-restart',
  title: 'kill -9 of the Kafka broker, then a restart on the same port and data dir',
  ownKafka: true,
  async inject(ctx) {
    const kafka = ctx.platform.kafkaInstance;
    const faultAt = Date.now();
    await kafka.kill();
    ctx.log('kafka: broker killed (SIGKILL)');
    await sleep(ctx.sizes.downMs);
    await kafka.restart();
    const restoredAt = Date.now();
    ctx.log(`kafka: serving again after ${restoredAt - faultAt} ms`);
    return {
      faultAt,
      restoredAt,
      notes: ['single broker (replication factor 1): a restart, not a failover'],
    };
  },
};

function redisRestart(appendOnly: boolean): ChaosScenario {
  return {
    id: appendOnly ? 'redis-restart-aof' : 'redis-restart',
    title: appendOnly
      ? 'kill -9 of redis-server running with AOF (appendfsync everysec), restart on the same port and dir'
      : 'kill -9 of redis-server without persistence, restart on the same port: it comes back empty',
    async prepare(ctx) {
      if (!appendOnly) return [];
      await ctx.platform.redis.enableAppendOnly();
      return ['AOF switched on in the running redis-server (CONFIG SET) before the traffic'];
    },
    async inject(ctx) {
      const redis = ctx.platform.redis;
      const faultAt = Date.now();
      await redis.kill();
      await sleep(ctx.sizes.redisDownMs);
      await redis.start(appendOnly);
      const restoredAt = Date.now();
      return {
        faultAt,
        restoredAt,
        notes: [
          appendOnly
            ? 'restarted with --appendonly yes: the dataset comes back from the AOF'
            : 'restarted with --appendonly no and no RDB: registry, ledger, idempotency keys and offline store are gone',
        ],
      };
    },
  };
}

const csDrain: ChaosScenario = {
  id: 'cs-drain',
  title: 'SIGTERM drain of a connection server holding every device, then a restart',
  async prepare(ctx) {
    const victim = drainVictim(ctx);
    const elsewhere = ctx.fleet.devices.filter((d) => d.serverId !== victim.serverId);
    await ctx.fleet.move(elsewhere, victim);
    return [`moved ${elsewhere.length} devices to ${victim.serverId} so it holds every device`];
  },
  async inject(ctx) {
    const victim = drainVictim(ctx);
    const held = devicesOn(ctx, victim);
    const hintsBefore = ctx.fleet.devices.reduce((n, d) => n + (d.counters.hints['server_shutdown'] ?? 0), 0);
    // The drain is bounded by the window, the grace and the service's own close steps; the
    // suite waits this long before it kills the process.
    const boundMs = ctx.platform.drainWindowMs + ctx.platform.closeGraceMs + 20_000;
    victim.service.heldDown = true;
    const faultAt = Date.now();
    const exit = await victim.service.terminate(boundMs);
    ctx.log(
      `${victim.serverId}: ${exit.exitedByItself ? `exited with code ${exit.code}` : 'killed after the bound'} ${Math.round(exit.ms)} ms after SIGTERM`,
    );
    await victim.service.start();
    const restoredAt = Date.now();
    const hinted =
      ctx.fleet.devices.reduce((n, d) => n + (d.counters.hints['server_shutdown'] ?? 0), 0) - hintsBefore;
    return {
      faultAt,
      restoredAt,
      notes: [
        `${victim.serverId} held ${held} devices; ${hinted} got a server_shutdown hint`,
        `exit ${Math.round(exit.ms)} ms after SIGTERM, ${exit.exitedByItself ? `code ${exit.code}` : 'did not exit by itself'}`,
      ],
      checks: () => [
        {
          name: 'drained server exits by itself with code 0',
          pass: exit.exitedByItself && exit.code === 0,
          detail: exit.exitedByItself
            ? `exit code ${exit.code} after ${Math.round(exit.ms)} ms`
            : `still running ${boundMs} ms after SIGTERM; killed`,
        },
        {
          name: 'every device on the drained server got a reconnect hint',
          pass: hinted >= held,
          detail: `${hinted} of ${held}`,
        },
      ],
    };
  },
};

/** The server that has been up longest (not restarted by an earlier scenario): the last one. */
function drainVictim(ctx: ScenarioContext): ConnectionServerRef {
  return ctx.platform.servers[ctx.platform.servers.length - 1] as ConnectionServerRef;
}

/** Device ids whose partitions the poison burst lands on; the probe's canaries go to them too. */
function poisonTargets(ctx: ScenarioContext): string[] {
  const step = Math.max(1, Math.floor(ctx.fleet.devices.length / 8));
  return ctx.fleet.devices.filter((_, i) => i % step === 0).map((d) => d.id);
}

/** JSON nested `depth` deep: `[[[...0...]]]`. */
function nested(depth: number): string {
  return `${'['.repeat(depth)}0${']'.repeat(depth)}`;
}

interface PoisonKind {
  readonly name: string;
  value(deviceId: string, id: string): string | Buffer;
}

const POISON: readonly PoisonKind[] = [
  {
    // The record from the issue: a valid request whose payload is ~2,000 deep (about 4 KB).
    name: 'deep-payload',
    value: (deviceId, id) =>
      `{"v":1,"id":"${id}","target":{"type":"device","id":"${deviceId}"},"createdAt":${Date.now()},"payload":${nested(2000)}}`,
  },
  { name: 'deep-json', value: () => nested(2000) },
  { name: 'not-json', value: () => 'this is not JSON {' },
  { name: 'binary', value: () => Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x80, 0x7b]) },
  {
    name: 'wrong-version',
    value: (deviceId, id) => JSON.stringify({ v: 2, id, target: { type: 'device', id: deviceId } }),
  },
  { name: 'no-target', value: (_d, id) => JSON.stringify({ v: 1, id, payload: {}, createdAt: Date.now() }) },
  { name: 'json-array', value: () => '[1,2,3]' },
];

const poison: ChaosScenario = {
  id: 'poison',
  title: 'a burst of poison records produced straight into push-requests, on the partitions of live traffic',
  canaries: poisonTargets,
  async inject(ctx) {
    const targets = poisonTargets(ctx);
    const ids: string[] = [];
    const records = [];
    for (const kind of POISON) {
      for (let k = 0; k < ctx.sizes.poisonPerKind; k++) {
        const deviceId = targets[(ids.length + k) % targets.length] as string;
        const id = `poison-${ctx.platform.run}-${kind.name}-${k}`;
        ids.push(id);
        records.push({
          key: pushTargetKey({ type: 'device', id: deviceId }),
          value: kind.value(deviceId, id),
          headers: { [POISON_HEADER]: id },
        });
      }
    }
    const faultAt = Date.now();
    await ctx.producer.send(ctx.platform.topics.pushRequests, records);
    ctx.log(`poison: ${records.length} records produced onto the keys of ${targets.length} devices`);
    return {
      faultAt,
      restoredAt: faultAt,
      notes: [
        `${records.length} poison records: ${POISON.map((p) => p.name).join(', ')} × ${ctx.sizes.poisonPerKind}`,
      ],
      checks: () => {
        const dead = new Map<string, string | undefined>();
        for (const e of ctx.observer.dlq()) if (e.poisonId) dead.set(e.poisonId, e.reason);
        const missing = ids.filter((id) => !dead.has(id));
        const reasons: Record<string, number> = {};
        for (const r of dead.values()) reasons[r ?? '?'] = (reasons[r ?? '?'] ?? 0) + 1;
        return [
          {
            name: 'every poison record reaches the DLQ with a reason',
            pass: missing.length === 0,
            detail: `${ids.length - missing.length}/${ids.length} dead-lettered (${Object.entries(reasons)
              .map(([r, n]) => `${r} ${n}`)
              .join(', ')})${missing.length > 0 ? `; missing e.g. ${missing.slice(0, 3).join(', ')}` : ''}`,
          },
        ];
      },
    };
  },
};

export const SCENARIOS: Readonly<Record<ScenarioId, ChaosScenario>> = {
  'cs-kill': csKill,
  'processor-kill': processorKill,
  poison,
  'kafka-restart': kafkaRestart,
  'redis-restart-aof': redisRestart(true),
  'redis-restart': redisRestart(false),
  'cs-drain': csDrain,
};
