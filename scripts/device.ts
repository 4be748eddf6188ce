// `npm run device -- --device d1 --user u1`: a device built on @pushline/client that connects to the
// platform `npm start` runs, prints every message it receives and acks it.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { PushlineClient } from '@pushline/client';
import { loadOrCreateCredentials, stateDir } from './lib/dev-credentials.ts';
import { mintDevToken } from './lib/dev-token.ts';

const USAGE = `usage: npm run device -- --device <deviceId> --user <userId> [--url <device URL,...>] [--subscribe topic,...] [--reject]

Connects one device with the SDK, prints each message it receives as a JSON line on stdout and
acks it (or nacks it with --reject). Tokens are minted with the dev secret of \`npm start\`; the
device URLs come from .pushline/env (written by \`npm start\`) unless --url is given.
Ctrl-C disconnects.
`;

const options = {
  device: { type: 'string' },
  user: { type: 'string' },
  tenant: { type: 'string' },
  url: { type: 'string' },
  subscribe: { type: 'string' },
  reject: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} satisfies ParseArgsConfig['options'];

let parsed: ReturnType<typeof parseArgs<{ options: typeof options }>>;
try {
  parsed = parseArgs({ options });
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
  process.exit(2);
}
const { values } = parsed;
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
if (!values.device || !values.user) {
  process.stderr.write(USAGE);
  process.exit(2);
}
const device = values.device;
const user = values.user;

/** KEY=value lines of .pushline/env. */
function envFile(): Record<string, string> {
  const file = join(stateDir, 'env');
  if (!existsSync(file)) return {};
  return Object.fromEntries(
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((line) => /^[A-Z_]+=/.test(line))
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
}
const urls = (
  values.url ??
  process.env['PUSHLINE_DEVICE_URLS'] ??
  envFile()['PUSHLINE_DEVICE_URLS'] ??
  'http://127.0.0.1:7070'
)
  .split(',')
  .map((u) => u.trim())
  .filter(Boolean);
const secret =
  process.env['PUSHLINE_DEVICE_JWT_SECRET'] ?? loadOrCreateCredentials().credentials.deviceJwtSecret;
const topics = values.subscribe?.split(',').filter(Boolean) ?? [];
const topicClaims = topics.filter((t) => !t.startsWith(`user:${user}`));

const log = (line: string) => process.stderr.write(`[device ${device}] ${line}\n`);
const client = new PushlineClient({
  url: urls,
  token: () =>
    mintDevToken(secret, { device, user, tenant: values.tenant, topics: topicClaims, ttlSeconds: 3600 }),
});
client.on('state', ({ state }) => log(state));
client.on('connected', ({ url }) => log(`connected to ${url}`));
client.on('disconnected', (d) =>
  log(
    `disconnected (${d.hint ? `hint ${d.hint.reason}` : d.reason})${d.willReconnect ? `; reconnecting in ${d.reconnectInMs} ms` : ''}`,
  ),
);
client.on('closed', (c) => {
  log(`closed: ${c.reason}${c.error ? ` (${c.error.code}: ${c.error.message})` : ''}`);
  process.exitCode = c.reason === 'client' ? 0 : 1;
});
client.on('error', (e) => log(`${e.code}: ${e.message}`));
client.on('subscriptionFailed', ({ topic, error }) => log(`subscription ${topic} dropped: ${error.code}`));
client.onMessage((m) => {
  process.stdout.write(
    `${JSON.stringify({ id: m.id, payload: m.payload, from: m.from, topic: m.topic, traceId: m.trace?.traceId })}\n`,
  );
  if (values.reject) throw new Error('rejected by --reject');
});
for (const topic of topics) {
  client.subscribe(topic).then(
    () => log(`subscribed to ${topic}`),
    (err: unknown) => log(`subscribe ${topic} failed: ${err instanceof Error ? err.message : String(err)}`),
  );
}
client.connect();
const stop = () => client.close();
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
