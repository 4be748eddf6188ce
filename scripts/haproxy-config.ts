// Writes docker-compose's HAProxy configuration from the connection servers it runs
// (`--check` only compares). The same generator configures HAProxy for `npm start` and the tests.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { COMPOSE_HAPROXY_CONFIG, composeHaproxyConfig } from './lib/compose-haproxy.ts';

const root = join(import.meta.dirname, '..');
const file = join(root, COMPOSE_HAPROXY_CONFIG);
const next = composeHaproxyConfig(readFileSync(join(root, 'docker-compose.yml'), 'utf8'));
if (process.argv.includes('--check')) {
  if (readFileSync(file, 'utf8') !== next) {
    process.stderr.write(`${COMPOSE_HAPROXY_CONFIG} is stale: run \`node scripts/haproxy-config.ts\`\n`);
    process.exit(1);
  }
} else {
  writeFileSync(file, next);
}
