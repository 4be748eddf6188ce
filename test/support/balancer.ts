import { connectionServerEnv, parseEnv } from '@pushline/config';
import {
  assembleConnectionServer,
  haproxyConfig,
  type AssembledConnectionServer,
  type BalancedServer,
} from '@pushline/connection-server';
import { freePort, startHaproxy, type HaproxyInstance } from '@pushline/devstack';
import { createLogger, silentLogger } from '@pushline/telemetry';
import { waitUntil } from '@pushline/testkit';
import type { Platform } from './platform.ts';

/** One server line of HAProxy's stats. */
interface HaproxyServerStat {
  /** UP, DOWN, DRAIN, MAINT, with HAProxy's decorations (e.g. `DOWN (agent)`). */
  readonly status: string;
  /** Effective weight (the configured 100 scaled by the agent's percentage). */
  readonly weight: number;
  /** Sessions open now, and since start. */
  readonly current: number;
  readonly total: number;
}

/** A real HAProxy in front of connection servers, configured by the platform's own generator. */
export interface Balancer {
  /** The one device URL. */
  readonly url: string;
  readonly statsUrl: string;
  readonly haproxy: HaproxyInstance;
  /** The backend's servers by name, as HAProxy sees them now. */
  stats(): Promise<Map<string, HaproxyServerStat>>;
  /** Resolves once HAProxy shows server `name` in a state `check` accepts. */
  until(
    name: string,
    check: (s: HaproxyServerStat) => boolean,
    what: string,
    timeoutMs?: number,
  ): Promise<HaproxyServerStat>;
  stop(): Promise<void>;
}

/**
 * HAProxy asks the agents and /readyz more often than the defaults (2 s) so tests settle fast; the
 * configuration is otherwise the one `npm start` and docker-compose run.
 */
export async function startBalancer(
  servers: readonly BalancedServer[],
  options: { agentInterMs?: number; checkInterMs?: number } = {},
): Promise<Balancer> {
  let url = '';
  let statsUrl = '';
  const haproxy = await startHaproxy({
    render: async () => {
      const [port, statsPort] = [await freePort(), await freePort()];
      url = `http://127.0.0.1:${port}`;
      statsUrl = `http://127.0.0.1:${statsPort}`;
      return {
        config: haproxyConfig(servers, {
          bind: { host: '127.0.0.1', port },
          stats: { host: '127.0.0.1', port: statsPort },
          agentInterMs: options.agentInterMs ?? 200,
          checkInterMs: options.checkInterMs ?? 300,
          generatedBy: 'test/support/balancer.ts',
        }),
        readyPort: port,
      };
    },
  });
  const stats = async () => {
    const res = await fetch(`${statsUrl}/stats;csv`);
    const lines = (await res.text()).split('\n').filter((l) => l.trim() !== '');
    const header = (lines[0] ?? '').replace(/^# /, '').split(',');
    const col = (name: string) => header.indexOf(name);
    const rows = new Map<string, HaproxyServerStat>();
    for (const line of lines.slice(1)) {
      const f = line.split(',');
      if (f[col('pxname')] !== 'connection-servers') continue;
      const name = f[col('svname')] ?? '';
      if (name === 'BACKEND') continue;
      rows.set(name, {
        status: f[col('status')] ?? '',
        weight: Number(f[col('weight')]),
        current: Number(f[col('scur')]),
        total: Number(f[col('stot')]),
      });
    }
    return rows;
  };
  return {
    get url() {
      return url;
    },
    get statsUrl() {
      return statsUrl;
    },
    haproxy,
    stats,
    until: (name, check, what, timeoutMs = 10_000) =>
      waitUntil(
        async () => {
          const s = (await stats()).get(name);
          return s && check(s) ? s : undefined;
        },
        { timeoutMs, what: `HAProxy to show ${name} ${what}` },
      ),
    stop: () => haproxy.stop(),
  };
}

/** A connection server in this process with fixed ports and a load agent, ready to be balanced. */
export interface InProcessServer {
  readonly assembled: AssembledConnectionServer;
  readonly balanced: BalancedServer;
  readonly serverId: string;
}

export async function startAgentServer(
  platform: Platform,
  name: string,
  env: Readonly<Record<string, string>> = {},
): Promise<InProcessServer> {
  const serverId = `${platform.prefix}-${name}`;
  const config = parseEnv(connectionServerEnv, {
    ...platform.serviceEnv,
    PUSHLINE_SERVER_ID: serverId,
    PUSHLINE_HOST: '127.0.0.1',
    PUSHLINE_PORT: String(await freePort()),
    PUSHLINE_INTERNAL_PORT: String(await freePort()),
    PUSHLINE_AGENT_PORT: String(await freePort()),
    PUSHLINE_DEVICE_JWT_SECRET: platform.jwtSecret,
    PUSHLINE_CLOSE_GRACE_MS: '200',
    PUSHLINE_DRAIN_WINDOW_MS: '500',
    ...env,
  });
  const level = process.env['PUSHLINE_TEST_LOG'];
  const assembled = assembleConnectionServer(config, {
    logger: level ? createLogger({ service: 'connection-server', level }) : silentLogger(),
    kafka: platform.kafka,
  });
  await assembled.start();
  return { assembled, serverId, balanced: { name: serverId, host: '127.0.0.1', config } };
}
