// `npm start`: the whole platform on this machine, then a summary of where to connect.
//   npm start -- --redis-aof    Redis with an append-only file under .pushline/redis (kept across
//                               runs); PUSHLINE_DEV_REDIS_AOF=true does the same.
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadOrCreateCredentials, stateDir } from './lib/dev-credentials.ts';
import { mintDevToken } from './lib/dev-token.ts';
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
    logDir: freshLogDir(),
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
  const envFile = writeEnvFile(platform, key);
  const demoToken = await mintDevToken(credentials.deviceJwtSecret, {
    device: 'demo-1',
    user: 'demo',
    ttlSeconds: 86_400,
  });
  // The token rides in the fragment, which browsers never send to a server.
  const demoLink = `${platform.consoleUrl}/demo#token=${demoToken}`;
  process.stdout.write(
    [
      '',
      'Pushline is running.',
      `  Devices connect (socket.io, websocket):  ${platform.deviceUrl}`,
      `  Push API:                                ${api}   (OpenAPI: ${api}/v1/openapi.json)`,
      `  Console:                                 ${platform.consoleUrl}/console   (sign in with the admin key)`,
      `  Demo device (browser):                   ${demoLink}`,
      `  Push API ops (/readyz, /metrics):        ${platform.services.find((s) => s.name === 'push-api')?.opsUrl ?? ''}`,
      ...(platform.balancerStatsUrl
        ? [`  Balancer (HAProxy, leastconn + load agents): ${platform.balancerStatsUrl}`]
        : []),
      `  Kafka: ${platform.devstack.kafkaBrokers.join(',')}   Redis: ${platform.devstack.redisUrl}${redisAof ? ' (AOF)' : ''}`,
      `  API key (admin): ${key}`,
      `  These URLs and the key are in ${envFile}   (source it: set -a; . ${envFile}; set +a)`,
      '',
      'Connect a device and print what it receives:',
      '  npm run device -- --device d1 --user u1',
      'Mint a device token:',
      '  npm run -s token -- --device d1 --user u1',
      'Publish a message to device d1 (async, via Kafka):',
      `  curl -s -X POST ${api}/v1/publish -H 'authorization: Bearer ${key}' -H 'content-type: application/json' -d '{"target":{"type":"device","id":"d1"},"payload":{"hello":"world"}}'`,
      'Push directly and get delivery feedback:',
      `  curl -s -X POST ${api}/v1/devices/d1/messages -H 'authorization: Bearer ${key}' -H 'content-type: application/json' -d '{"payload":{"hello":"world"}}'`,
      `Canary (probes every connection server; metrics): ${platform.services.find((s) => s.name === 'canary')?.opsUrl ?? '-'}/metrics`,
      `Logs: ${platform.logDir}   Ctrl-C drains and stops everything; a second Ctrl-C forces it.`,
      '',
    ].join('\n'),
  );
  process.stdout.write(
    `PUSHLINE_READY ${JSON.stringify({
      apiUrl: api,
      deviceUrl: platform.deviceUrl,
      deviceUrls: platform.deviceUrls,
      balancerStatsUrl: platform.balancerStatsUrl,
      consoleUrl: platform.consoleUrl,
      redisUrl: platform.devstack.redisUrl,
      pids: platform.services.map((s) => s.pid),
      // Each ops URL under the name of the service instance it belongs to.
      opsUrls: Object.fromEntries(platform.services.map((s) => [s.name, s.opsUrl])),
    })}\n`,
  );
}

/** Each start logs to a folder of its own; `logs/latest` points at the newest. */
function freshLogDir(): string {
  const logs = join(stateDir, 'logs');
  const name = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = join(logs, name);
  mkdirSync(dir, { recursive: true });
  rmSync(join(logs, 'latest'), { force: true });
  symlinkSync(name, join(logs, 'latest'));
  return dir;
}

/** The real URLs and key of this start, for the README's "Try it" and `npm run device`. */
function writeEnvFile(running: Awaited<ReturnType<typeof startPlatform>>, apiKey: string): string {
  const file = join(stateDir, 'env');
  const lines = [
    '# Written by `npm start` for this run; load it with: set -a; . .pushline/env; set +a',
    `PUSHLINE_API=${running.apiUrl}`,
    `PUSHLINE_API_KEY=${apiKey}`,
    `PUSHLINE_DEVICE_URL=${running.deviceUrl}`,
    // Devices go through the balancer; `npm run device` reads this list.
    `PUSHLINE_DEVICE_URLS=${running.deviceUrl}`,
    `PUSHLINE_CONSOLE=${running.consoleUrl}/console`,
  ];
  writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  return file;
}
