// `npm start`: the whole platform on this machine, then a summary of where to connect.
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadOrCreateCredentials, stateDir } from './lib/dev-credentials.ts';
import { mintDevToken } from './lib/dev-token.ts';
import { startPlatform } from './lib/platform.ts';

const log = (line: string): void => {
  process.stderr.write(`[pushline] ${line}\n`);
};
const { credentials, created } = loadOrCreateCredentials();
if (created) log(`generated dev credentials in ${join(stateDir, 'dev-credentials.json')}`);

let stopping: Promise<void> | undefined;
let platform: Awaited<ReturnType<typeof startPlatform>> | undefined;
const shutdown = (signal: string) => {
  if (stopping) return;
  log(`${signal}: stopping services, Kafka and Redis`);
  stopping = (platform?.stop() ?? Promise.resolve()).then(
    () => log('stopped'),
    (err: unknown) => {
      log(`stop failed: ${String(err)}`);
      process.exitCode = 1;
    },
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
      ...(platform.balancerStatsUrl
        ? [`  Balancer (HAProxy, leastconn + load agents): ${platform.balancerStatsUrl}`]
        : []),
      `  Kafka: ${platform.devstack.kafkaBrokers.join(',')}   Redis: ${platform.devstack.redisUrl}`,
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
      `Logs: ${platform.logDir}   Ctrl-C stops everything.`,
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
