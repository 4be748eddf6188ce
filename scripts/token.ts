// Mints a device token signed with the dev secret that `npm start` generated:
//   npm run token -- --device d1 --user u1 [--tenant t1] [--topics news,scores.*] [--ttl 3600]
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';
import { loadOrCreateCredentials } from './lib/dev-credentials.ts';

const { values } = parseArgs({
  options: {
    device: { type: 'string' },
    user: { type: 'string' },
    tenant: { type: 'string' },
    topics: { type: 'string' },
    ttl: { type: 'string', default: '3600' },
  },
});

if (!values.device || !values.user) {
  process.stderr.write(
    'usage: npm run token -- --device <deviceId> --user <userId> [--tenant t] [--topics a,b*] [--ttl seconds]\n',
  );
  process.exit(2);
}
const ttl = Number(values.ttl);
if (!Number.isInteger(ttl) || ttl <= 0) {
  process.stderr.write('--ttl must be a positive whole number of seconds\n');
  process.exit(2);
}

const secret =
  process.env['PUSHLINE_DEVICE_JWT_SECRET'] ?? loadOrCreateCredentials().credentials.deviceJwtSecret;
const claims: Record<string, unknown> = { uid: values.user };
if (values.tenant) claims['tid'] = values.tenant;
if (values.topics) claims['topics'] = values.topics.split(',').filter(Boolean);

const token = await new SignJWT(claims)
  .setProtectedHeader({ alg: 'HS256' })
  .setSubject(values.device)
  .setIssuedAt()
  .setExpirationTime(`${ttl}s`)
  .sign(new TextEncoder().encode(secret));
process.stdout.write(`${token}\n`);
