// `node bench/src/tools/redis-batch.ts [--registers=20000] [--rounds=4] [--bursts=1,8,32]`: CPU
// per device registration (`RedisDeviceRegistry.register`, one Lua script through `sendAll`) on a
// real redis-server, when the batch is a pipeline of its own (a client without auto-pipelining)
// and when its command joins the auto-pipeline of the event-loop turn (the connection server's
// client). A burst is how many registrations start in one turn, as connects that arrive together
// do. Prints the median over rounds of CPU µs and wall µs per registration, per client and burst.
// The numbers behind "Batches ride the auto-pipeline" in docs/performance.md.
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { startRedis } from '@pushline/devstack';
import { RedisDeviceRegistry } from '@pushline/registry';

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
  'auto-pipeline': new Redis(redisServer.url, { enableAutoPipelining: true }),
};

async function registerAll(
  registry: RedisDeviceRegistry,
  burst: number,
): Promise<{ cpuUs: number; wallUs: number }> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < registers; i += burst) {
    const writes: Promise<unknown>[] = [];
    for (let j = 0; j < burst; j++) {
      const deviceId = `d-${i + j}`;
      writes.push(
        registry.register(
          {
            deviceId,
            userId: `u-${(i + j) % 100}`,
            tenantId: undefined,
            serverId: 'cs-1',
            serverUrl: 'ws://127.0.0.1:1',
            connectionId: `c-${i + j}`,
            connectedAt: Date.now(),
            lastSeen: Date.now(),
          },
          60,
        ),
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
      for (const [name, redis] of Object.entries(clients)) {
        const registry = new RedisDeviceRegistry({ redis, keyPrefix: `rb${round}:${burst}:` });
        const { cpuUs, wallUs } = await registerAll(registry, burst);
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
