// Mints a device token signed with the dev secret that `npm start` generated:
//   npm run token -- --device d1 --user u1 [--tenant t1] [--topics news,scores.*] [--ttl 3600]
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadOrCreateCredentials } from './lib/dev-credentials.ts';
import { mintDevToken } from './lib/dev-token.ts';

const USAGE = `usage: npm run -s token -- --device <deviceId> --user <userId> [--tenant <tenantId>] [--topics a,b*] [--ttl <seconds>]

Prints a device token (HS256 JWT) signed with the dev secret that \`npm start\` generated
(.pushline/dev-credentials.json), or with PUSHLINE_DEVICE_JWT_SECRET when it is set.

  --device  device id (the token's sub)           --tenant  tenant id (tid), optional
  --user    user id (uid)                         --topics  topics the device may subscribe to
  --ttl     lifetime in seconds (default 3600)    --help    this text
`;

const options = {
  device: { type: 'string' },
  user: { type: 'string' },
  tenant: { type: 'string' },
  topics: { type: 'string' },
  ttl: { type: 'string', default: '3600' },
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
const ttl = Number(values.ttl);
if (!Number.isInteger(ttl) || ttl <= 0) {
  process.stderr.write('--ttl must be a positive whole number of seconds\n');
  process.exit(2);
}

const secret =
  process.env['PUSHLINE_DEVICE_JWT_SECRET'] ?? loadOrCreateCredentials().credentials.deviceJwtSecret;
const token = await mintDevToken(secret, {
  device: values.device,
  user: values.user,
  tenant: values.tenant,
  topics: values.topics?.split(',').filter(Boolean),
  ttlSeconds: ttl,
});
process.stdout.write(`${token}\n`);
