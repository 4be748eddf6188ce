// `npm start`: the whole platform on this machine, then a summary of where to connect.
//   npm start -- --redis-aof    Redis with an append-only file under .pushline/redis (kept across
//                               runs); PUSHLINE_DEV_REDIS_AOF=true does the same.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadOrCreateCredentials, stateDir } from './lib/dev-credentials.ts';
import { startPlatform } from './lib/platform.ts';

const log = (line: string): void => {
  process.stderr.write(`[pushline] ${line}\n`);
};
const { values: flags } = parseArgs({
  args: process.argv.slice(2),
  options: { 'redis-aof': { type: 'boolean' } },
  strict: true,
});
const redisAof = flags['redis-aof'] === true || process.env['PUSHLINE_DEV_REDIS_AOF'] === 'true';
const { credentials, created } = loadOrCreateCredentials();
if (created) log(`generated dev credentials in ${join(stateDir, 'dev-credentials.json')}`);

/**
 * One keypress can reach us twice: the terminal signals the whole foreground group, and npm
 * forwards what it got to its child, which is this process once the shell scripts exec'd. A
 * signal this soon after the first counts as the same Ctrl-C.
 */
const SAME_KEYPRESS_MS = 300;

let platform: Awaited<ReturnType<typeof startPlatform>> | undefined;
let stopping: Promise<void> | undefined;
let firstSignalAt = 0;
let forced = false;
const shutdown = (signal: string) => {
  if (!stopping) {
    firstSignalAt = Date.now();
    log(
      `${signal}: draining (devices get reconnect hints), then stopping Kafka and Redis; Ctrl-C again to force`,
    );
    stopping = (platform?.stop() ?? Promise.resolve()).then(
      () => log('stopped'),
      (err: unknown) => {
        log(`stop failed: ${String(err)}`);
        process.exitCode = 1;
      },
    );
    return;
  }
  if (forced || Date.now() - firstSignalAt < SAME_KEYPRESS_MS) return;
  forced = true;
  log(`${signal} again: forcing the services to exit and killing Kafka and Redis`);
  // 128 + SIGINT, as a shell reports a job a Ctrl-C ended.
  process.exitCode = 130;
  void (platform?.forceStop() ?? Promise.resolve()).then(
    () => log('stopped (forced)'),
    (err: unknown) => log(`forced stop failed: ${String(err)}`),
  );
};
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));

try {
  platform = await startPlatform({
    credentials,
    logDir: join(stateDir, 'logs'),
    preferDefaultPorts: process.env['PUSHLINE_DEV_FREE_PORTS'] !== 'true',
    log,
    ...(redisAof ? { redisPersistence: 'aof' as const, redisDir: join(stateDir, 'redis') } : {}),
  });
} catch (err) {
  log(`failed to start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
if (stopping) {
  await platform.stop();
} else {
  const api = platform.apiUrl;
  const key = credentials.apiKey;
  process.stdout.write(
    [
      '',
      'Pushline is running.',
      `  Devices connect (socket.io, websocket):  ${platform.deviceUrls.join('  ')}`,
      `  Push API:                                ${api}   (OpenAPI: ${api}/v1/openapi.json)`,
      `  Kafka: ${platform.devstack.kafkaBrokers.join(',')}   Redis: ${platform.devstack.redisUrl}${redisAof ? ' (AOF)' : ''}`,
      `  API key (admin): ${key}`,
      '',
      'Mint a device token:',
      '  npm run -s token -- --device d1 --user u1',
      'Publish a message to device d1 (async, via Kafka):',
      `  curl -s -X POST ${api}/v1/publish -H 'authorization: Bearer ${key}' -H 'content-type: application/json' -d '{"target":{"type":"device","id":"d1"},"payload":{"hello":"world"}}'`,
      'Push directly and get delivery feedback:',
      `  curl -s -X POST ${api}/v1/devices/d1/messages -H 'authorization: Bearer ${key}' -H 'content-type: application/json' -d '{"payload":{"hello":"world"}}'`,
      `Logs: ${platform.logDir}   Ctrl-C drains and stops everything; a second Ctrl-C forces it.`,
      '',
    ].join('\n'),
  );
  process.stdout.write(
    `PUSHLINE_READY ${JSON.stringify({ apiUrl: api, deviceUrls: platform.deviceUrls, pids: platform.services.map((s) => s.pid), opsUrls: platform.services.map((s) => s.opsUrl), redisUrl: platform.devstack.redisUrl })}\n`,
  );
}
