import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { row } from '../report/model.ts';
import { round } from '../stats.ts';
import { measureCpu, perMessage } from '../targets/memory.ts';
import type { PushlineTarget } from '../targets/pushline.ts';
import { countRegistered, pollUntil, requirePushline, withFleet } from './common.ts';
import type { Scenario, ScenarioContext, ScenarioOutput } from './types.ts';

/** Calls per Redis command, from INFO commandstats. */
type CommandCalls = Record<string, number>;

async function commandCalls(redis: Redis): Promise<CommandCalls> {
  const text = await redis.info('commandstats');
  const calls: CommandCalls = {};
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[m[1] as string] = Number(m[2]);
  return calls;
}

/** Commands this scenario sends itself while measuring (keyspace scan, INFO), left out of the deltas. */
const OWN_COMMANDS = new Set(['scan', 'memory|usage', 'info', 'command|info']);

function delta(before: CommandCalls, after: CommandCalls): CommandCalls {
  const out: CommandCalls = {};
  for (const [cmd, n] of Object.entries(after)) {
    const d = n - (before[cmd] ?? 0);
    if (d > 0 && !OWN_COMMANDS.has(cmd)) out[cmd] = d;
  }
  return out;
}

/** Commands Redis flags as writes (COMMAND INFO), among `names`. */
async function writeCommands(redis: Redis, names: readonly string[]): Promise<Set<string>> {
  if (names.length === 0) return new Set();
  const info = (await redis.call('COMMAND', 'INFO', ...names.map((n) => n.split('|')[0] as string))) as (
    [string, number, string[], ...unknown[]] | null
  )[];
  return new Set(info.flatMap((c) => (c && c[2].includes('write') ? [c[0]] : [])));
}

/** Redis keys under `prefix`, grouped by their kind (the first segment after the prefix), with MEMORY USAGE. */
async function keyMemory(
  redis: Redis,
  prefix: string,
): Promise<Record<string, { keys: number; bytes: number }>> {
  const byKind: Record<string, { keys: number; bytes: number }> = {};
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    const pipeline = redis.pipeline();
    // SAMPLES 0: every element of a set is counted, not an estimate from five.
    for (const key of keys) pipeline.call('MEMORY', 'USAGE', key, 'SAMPLES', '0');
    const sizes = (await pipeline.exec()) ?? [];
    keys.forEach((key, i) => {
      const kind = /^([a-z]+)/.exec(key.slice(prefix.length).replace(/^\{/, ''))?.[1] ?? 'other';
      const entry = (byKind[kind] ??= { keys: 0, bytes: 0 });
      entry.keys++;
      entry.bytes += Number(sizes[i]?.[1] ?? 0);
    });
  } while (cursor !== '0');
  return byKind;
}

async function usedMemory(redis: Redis): Promise<number> {
  return Number(/^used_memory:(\d+)/m.exec(await redis.info('memory'))?.[1] ?? 0);
}

/** Bytes of the topic's log segments on the broker's disk (undefined for an external Kafka). */
async function topicLogBytes(pushline: PushlineTarget, topic: string): Promise<number | undefined> {
  const dataDir = pushline.devstack.kafka?.dataDir;
  if (!dataDir) return undefined;
  let bytes = 0;
  for (const dir of (await readdir(dataDir)).filter((d) => d.startsWith(`${topic}-`))) {
    for (const file of (await readdir(join(dataDir, dir))).filter((f) => f.endsWith('.log'))) {
      bytes += (await stat(join(dataDir, dir, file))).size;
    }
  }
  return bytes;
}

/** Sum over the live connection servers of a counter's samples whose labels include `labels`. */
async function serverCounter(
  pushline: PushlineTarget,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  let n = 0;
  for (const s of pushline.servers.filter((x) => x.process.isRunning())) {
    const text = await (await fetch(`${s.internalUrl}/metrics`)).text();
    for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\}\\s+([0-9.eE+-]+)$`, 'gm'))) {
      const set = m[1] ?? '';
      if (Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) n += Number(m[2]);
    }
  }
  return n;
}

const registryOps = (pushline: PushlineTarget, op: string) =>
  serverCounter(pushline, 'pushline_registry_ops_total', { op, result: 'ok' });
const eventsSent = (pushline: PushlineTarget) =>
  serverCounter(pushline, 'pushline_connection_events_total', { result: 'sent' });

/**
 * Scenario 9: the per-device costs the capacity model of docs/scaling.md multiplies by 100M, read
 * from the real stores rather than estimated: registry bytes per device (MEMORY USAGE of every key
 * the registry wrote, and used_memory), Redis commands and writes per connect and per disconnect
 * (INFO commandstats, scripts' inner commands included), and connection-event bytes on the
 * broker's disk. Memory per connection, throughput per processor and the internal hop's cost
 * come from scenarios 1, 3 and 2 of the same run.
 */
export const capacityInputs: Scenario = {
  id: 9,
  name: 'capacity-inputs',
  title: 'Capacity inputs: registry bytes and writes per device, connection-event bytes',
  timeoutMs: () => 180_000,
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const pushline = requirePushline(ctx);
    const n = ctx.options.smoke ? 20 : Math.min(ctx.options.devices, 5_000);
    const redis = new Redis(pushline.devstack.redisUrl, { maxRetriesPerRequest: 2 });
    const prefix = pushline.keyPrefix;
    const urls = pushline.servers.filter((s) => s.process.isRunning()).map((s) => s.deviceUrl);
    try {
      return await withFleet(ctx, 'inputs', n, async (fleet, ids) => {
        const memBefore = await usedMemory(redis);
        const keysBefore = await keyMemory(redis, prefix);
        const eventsBefore = await eventsSent(pushline);
        const registersBefore = await registryOps(pushline, 'register');
        const unregistersBefore = await registryOps(pushline, 'unregister');
        const logBefore = await topicLogBytes(pushline, pushline.topics.connectionEvents);
        const callsBefore = await commandCalls(redis);

        // Waits on the servers' own counters, so no registry read of ours lands in the window.
        const procs = pushline.processes();
        const { value: connected, cost: connectCost } = await measureCpu(procs, async () => {
          const connect = await fleet.connect({ urls });
          await pollUntil(
            () => registryOps(pushline, 'register'),
            (c) => c - registersBefore >= connect.connected,
            30_000,
            200,
          );
          return connect.connected;
        });
        const callsConnected = await commandCalls(redis);
        const keysAfter = await keyMemory(redis, prefix);
        const memAfter = await usedMemory(redis);

        const { cost: disconnectCost } = await measureCpu(procs, async () => {
          await fleet.close();
          await pollUntil(
            () => registryOps(pushline, 'unregister'),
            (c) => c - unregistersBefore >= connected,
            30_000,
            200,
          );
        });
        const callsGone = await commandCalls(redis);
        const eventsAfter = await pollUntil(
          () => eventsSent(pushline),
          (e) => e - eventsBefore >= 2 * connected,
          10_000,
          200,
        );
        const logAfter = await topicLogBytes(pushline, pushline.topics.connectionEvents);
        const stillRegistered = await countRegistered(pushline, ids);

        const onConnect = delta(callsBefore, callsConnected);
        const onDisconnect = delta(callsConnected, callsGone);
        const writes = await writeCommands(redis, [
          ...new Set([...Object.keys(onConnect), ...Object.keys(onDisconnect)]),
        ]);
        const per = (calls: CommandCalls, only?: Set<string>) =>
          round(
            Object.entries(calls)
              .filter(([cmd]) => !only || only.has(cmd))
              .reduce((s, [, c]) => s + c, 0) / Math.max(1, connected),
            2,
          );
        const grown = (kind: string) => (keysAfter[kind]?.bytes ?? 0) - (keysBefore[kind]?.bytes ?? 0);
        const kinds = [...new Set([...Object.keys(keysAfter), ...Object.keys(keysBefore)])];
        const perDeviceByKind = Object.fromEntries(
          kinds.map((k) => [k, round(grown(k) / Math.max(1, connected), 1)]),
        );
        const registryBytes = kinds.reduce((s, k) => s + Math.max(0, grown(k)), 0) / Math.max(1, connected);
        const deviceKeyBytes = grown('dev') / Math.max(1, connected);
        const events = eventsAfter.value - eventsBefore;
        const connectCpu = perMessage(connectCost, connected);
        const disconnectCpu = perMessage(disconnectCost, connected);
        const cpuOf = (c: typeof connectCpu, name: string) => c.byProcess[name]?.cpuUs ?? null;
        const serversCpu = (c: typeof connectCpu) =>
          round(
            Object.entries(c.byProcess)
              .filter(([name]) => pushline.servers.some((server) => server.serverId === name))
              .reduce((sum, [, v]) => sum + v.cpuUs, 0),
            1,
          );
        const kafkaConnect = cpuOf(connectCpu, 'kafka');
        const kafkaDisconnect = cpuOf(disconnectCpu, 'kafka');
        const eventBytes =
          logBefore === undefined || logAfter === undefined || events === 0
            ? null
            : (logAfter - logBefore) / events;

        return {
          rows: [
            row(
              'inputs.registry.bytes',
              'registry bytes per device (MEMORY USAGE of every key it adds)',
              'bytes',
              { pushline: round(registryBytes, 0) },
              'lower',
            ),
            row(
              'inputs.registry.device_key',
              'of which its own record (dev hash)',
              'bytes',
              { pushline: round(deviceKeyBytes, 0) },
              'lower',
            ),
            row(
              'inputs.registry.used_memory',
              'Redis used_memory growth per device (keyspace and expiry overhead included)',
              'bytes',
              { pushline: round((memAfter - memBefore) / Math.max(1, connected), 0) },
              'lower',
            ),
            row(
              'inputs.redis.connect_commands',
              'Redis commands per connect (scripts counted with their inner commands)',
              'commands',
              { pushline: per(onConnect) },
              'lower',
            ),
            row(
              'inputs.redis.connect_writes',
              'Redis write commands per connect',
              'writes',
              { pushline: per(onConnect, writes) },
              'lower',
            ),
            row(
              'inputs.redis.disconnect_commands',
              'Redis commands per disconnect',
              'commands',
              { pushline: per(onDisconnect) },
              'lower',
            ),
            row(
              'inputs.redis.disconnect_writes',
              'Redis write commands per disconnect',
              'writes',
              { pushline: per(onDisconnect, writes) },
              'lower',
            ),
            row(
              'inputs.events.per_cycle',
              'connection events per connect + disconnect',
              'events',
              { pushline: round(events / Math.max(1, connected), 2) },
              'lower',
            ),
            row(
              'inputs.events.bytes',
              'connection-event bytes on the broker disk per event (batch overhead included)',
              'bytes',
              { pushline: eventBytes === null ? null : round(eventBytes, 0) },
              'lower',
            ),
            row(
              'inputs.cpu.redis_connect',
              'Redis CPU per connect',
              'µs',
              { pushline: cpuOf(connectCpu, 'redis') },
              'lower',
            ),
            row(
              'inputs.cpu.redis_disconnect',
              'Redis CPU per disconnect',
              'µs',
              { pushline: cpuOf(disconnectCpu, 'redis') },
              'lower',
            ),
            row(
              'inputs.cpu.servers_connect',
              'connection-server CPU per connect',
              'µs',
              { pushline: serversCpu(connectCpu) },
              'lower',
            ),
            row(
              'inputs.cpu.servers_disconnect',
              'connection-server CPU per disconnect',
              'µs',
              { pushline: serversCpu(disconnectCpu) },
              'lower',
            ),
            row(
              'inputs.cpu.kafka_event',
              'Kafka CPU per connection event',
              'µs',
              {
                pushline:
                  kafkaConnect === null || kafkaDisconnect === null || events === 0
                    ? null
                    : round(((kafkaConnect + kafkaDisconnect) * connected) / events, 1),
              },
              'lower',
            ),
          ],
          charts: [],
          notes: [
            `${connected} devices (two per user) connected over ${urls.length} connection servers, then disconnected; the registry keys are every key under the run's prefix, grouped by kind: ${Object.entries(
              perDeviceByKind,
            )
              .map(([k, b]) => `${k} ${b} B`)
              .join(', ')} per device.`,
            "Commands come from INFO commandstats deltas around each phase (this scenario's own SCAN, MEMORY USAGE and INFO left out); writes are the commands Redis flags as write. The servers' load reports and other loops also land in the window; at this size they are a fraction of a command per device.",
            'docs/scaling.md multiplies these by 100M devices and their recycling rate.',
          ],
          details: {
            devices: connected,
            keysBefore,
            keysAfter,
            perDeviceByKind,
            commandsOnConnect: onConnect,
            commandsOnDisconnect: onDisconnect,
            stillRegisteredAfterDisconnect: stillRegistered,
            cpuPerConnect: connectCpu,
            cpuPerDisconnect: disconnectCpu,
            writeCommands: [...writes],
            connectionEvents: events,
            connectionEventLogBytes:
              logBefore === undefined || logAfter === undefined ? null : logAfter - logBefore,
          },
        };
      });
    } finally {
      redis.disconnect();
    }
  },
};
