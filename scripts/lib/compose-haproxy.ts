import { connectionServerEnv, parseEnv } from '@pushline/config';
import { haproxyConfig, type BalancedServer } from '@pushline/connection-server';
import { parse } from 'yaml';

/** Where docker-compose's HAProxy takes devices and shows its stats (the ports it publishes). */
export const COMPOSE_DEVICE_PORT = 7070;
const COMPOSE_STATS_PORT = 8404;
/** The file compose mounts into its HAProxy container, relative to the repository. */
export const COMPOSE_HAPROXY_CONFIG = 'deploy/haproxy/haproxy.cfg';

interface ComposeService {
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null>;
}

/** Compose's `${VAR:-default}` with the default, as on a clean machine. */
const withDefaults = (value: string) =>
  value.replace(/\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}/g, (_m, fallback?: string) => fallback ?? '');

/** The connection servers of a docker-compose file, each with the settings its container runs with. */
function composeConnectionServers(composeYaml: string): BalancedServer[] {
  const compose = parse(composeYaml, { merge: true }) as { services: Record<string, ComposeService> };
  return Object.entries(compose.services)
    .filter(([, s]) =>
      (Array.isArray(s.command) ? s.command.join(' ') : (s.command ?? '')).includes(
        'services/connection-server/src/main.ts',
      ),
    )
    .map(([name, s]) => {
      const env = Object.fromEntries(
        Object.entries(s.environment ?? {}).map(([k, v]) => [k, withDefaults(v === null ? '' : String(v))]),
      );
      return { name, host: name, config: parseEnv(connectionServerEnv, env) };
    });
}

/** deploy/haproxy/haproxy.cfg as the generator makes it from docker-compose.yml. */
export function composeHaproxyConfig(composeYaml: string): string {
  return haproxyConfig(composeConnectionServers(composeYaml), {
    bind: { host: '0.0.0.0', port: COMPOSE_DEVICE_PORT },
    stats: { host: '0.0.0.0', port: COMPOSE_STATS_PORT },
    dockerDns: true,
    generatedBy: 'scripts/haproxy-config.ts (from docker-compose.yml)',
  });
}
