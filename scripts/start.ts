// `npm start`: the whole platform on this machine, then a summary of where to connect.
import { join } from 'node:path';
import { loadOrCreateCredentials, stateDir } from './lib/dev-credentials.ts';
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
    logDir: join(stateDir, 'logs'),
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
  process.stdout.write(
    [
      '',
      'Pushline is running.',
      `  Devices connect (socket.io, websocket):  ${platform.deviceUrls.join('  ')}`,
      `  Push API:                                ${api}   (OpenAPI: ${api}/v1/openapi.json)`,
      `  Push API ops (/readyz, /metrics):        ${platform.services.find((s) => s.name === 'push-api')?.opsUrl ?? ''}`,
      `  Kafka: ${platform.devstack.kafkaBrokers.join(',')}   Redis: ${platform.devstack.redisUrl}`,
      `  API key (admin): ${key}`,
      '',
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
    `PUSHLINE_READY ${JSON.stringify({ apiUrl: api, deviceUrls: platform.deviceUrls, pids: platform.services.map((s) => s.pid), opsUrls: platform.services.map((s) => s.opsUrl) })}\n`,
  );
}
