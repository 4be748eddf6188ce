import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';

/** Credentials `npm start` generates once per checkout; the file is git-ignored. */
const DevCredentials = z.object({
  apiKey: z.string().min(16),
  deviceJwtSecret: z.string().min(32),
  internalToken: z.string().min(16),
});
export type DevCredentials = z.infer<typeof DevCredentials>;

export const repoRoot = join(import.meta.dirname, '..', '..');
/** Where `npm start` keeps credentials and logs; PUSHLINE_STATE_DIR moves it (tests use a temp dir). */
export const stateDir = process.env['PUSHLINE_STATE_DIR'] ?? join(repoRoot, '.pushline');
const credentialsFile = join(stateDir, 'dev-credentials.json');

export function loadOrCreateCredentials(file = credentialsFile): {
  credentials: DevCredentials;
  created: boolean;
} {
  if (existsSync(file)) {
    return { credentials: DevCredentials.parse(JSON.parse(readFileSync(file, 'utf8'))), created: false };
  }
  const credentials: DevCredentials = {
    apiKey: `pl_dev_${randomBytes(24).toString('base64url')}`,
    deviceJwtSecret: randomBytes(48).toString('base64url'),
    internalToken: randomBytes(32).toString('base64url'),
  };
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(credentials, null, 2)}\n`, { mode: 0o600 });
  return { credentials, created: true };
}
