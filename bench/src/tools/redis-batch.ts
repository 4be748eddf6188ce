// `node bench/src/tools/redis-batch.ts [--registers=20000] [--rounds=4] [--bursts=1,8,32]`: CPU
// per device registration (one Lua script) on a real redis-server, sent three ways: as a pipeline
// of its own (what `sendAll` did for every batch on a client without auto-pipelining), as a plain
// command (what `sendAll` does for a batch of one command there: push-api's and the processor's
// clients), and joining the auto-pipeline of the event-loop turn (the connection server's
// client). The last two go through `RedisDeviceRegistry.register`. A burst is how many
// registrations start in one turn, as connects that arrive together do. Prints the median over
// rounds of CPU µs and wall µs per registration, per way and burst. The numbers behind "Batches
// ride the auto-pipeline" and "One script call per batch" in docs/performance.md.
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { startRedis } from '@pushline/devstack';
import { RedisDeviceRegistry, registryKeys, type DeviceRecord } from '@pushline/registry';

const { values } = parseArgs({
  options: {
    registers: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '4' },
    bursts: { type: 'string', default: '1,8,32' },
  },
});
const registers = Number(values.registers);
const rounds = Number(values.rounds);
const bursts = values.bursts.split(',').map(Number);

const redisServer = await startRedis();
const clients = {
  'own pipeline': new Redis(redisServer.url, { enableAutoPipelining: false }),
  command: new Redis(redisServer.url, { enableAutoPipelining: false }),
  'auto-pipeline': new Redis(redisServer.url, { enableAutoPipelining: true }),
};
type Way = keyof typeof clients;

type Dispatch = Record<string, (...args: (string | number)[]) => unknown>;
/** The registry's one-Redis registration, sent as a pipeline of one command. */
async function registerInOwnPipeline(redis: Redis, keyPrefix: string, record: DeviceRecord): Promise<void> {
  const keys = registryKeys(keyPrefix);
  const pipeline = redis.pipeline();
  (pipeline as unknown as Dispatch)['pushlineRegisterIndexed']?.(
    keys.device(record.deviceId),
    keys.user(record.userId),
    keys.server(record.serverId),
    record.serverId,
    record.serverUrl,
    record.connectionId,
    record.userId,
    '',
    record.connectedAt,
    60,
    record.deviceId,
  );
  await pipeline.exec();
}

async function registerAll(
  way: Way,
  keyPrefix: string,
  burst: number,
): Promise<{ cpuUs: number; wallUs: number }> {
  const redis = clients[way];
  // Defines the registry's scripts on the client.
  const registry = new RedisDeviceRegistry({ redis, keyPrefix });
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < registers; i += burst) {
    const writes: Promise<unknown>[] = [];
    for (let j = 0; j < burst; j++) {
      const record: DeviceRecord = {
        deviceId: `d-${i + j}`,
        userId: `u-${(i + j) % 100}`,
        tenantId: undefined,
        serverId: 'cs-1',
        serverUrl: 'ws://127.0.0.1:1',
        connectionId: `c-${i + j}`,
        connectedAt: Date.now(),
        lastSeen: Date.now(),
      };
      writes.push(
        way === 'own pipeline'
          ? registerInOwnPipeline(redis, keyPrefix, record)
          : registry.register(record, 60),
      );
    }
    await Promise.all(writes);
  }
  const used = process.cpuUsage(cpu);
  return {
    cpuUs: (used.user + used.system) / registers,
    wallUs: ((performance.now() - started) * 1000) / registers,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
try {
  for (const burst of bursts) {
    const samples = new Map<string, { cpu: number[]; wall: number[] }>();
    for (let round = 0; round < rounds; round++) {
      // Alternated, so a busy moment of the machine falls on both.
      for (const name of Object.keys(clients) as Way[]) {
        const { cpuUs, wallUs } = await registerAll(name, `rb${round}:${burst}:${name}:`, burst);
        const s = samples.get(name) ?? { cpu: [], wall: [] };
        s.cpu.push(cpuUs);
        s.wall.push(wallUs);
        samples.set(name, s);
      }
    }
    for (const [name, s] of samples) {
      console.log(
        `burst ${String(burst).padStart(3)}  ${name.padEnd(13)}  cpu ${median(s.cpu).toFixed(1).padStart(6)} µs  wall ${median(s.wall).toFixed(1).padStart(6)} µs  per registration`,
      );
    }
  }
} finally {
  for (const redis of Object.values(clients)) redis.disconnect();
  await redisServer.stop();
}
