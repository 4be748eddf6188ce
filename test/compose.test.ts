import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { describeEnv, parseEnv, serviceEnvSchemas, type EnvSchema } from '@pushline/config';
import { KAFKA_VERSION, ensureHaproxy } from '@pushline/devstack';
import {
  COMPOSE_DEVICE_PORT,
  COMPOSE_HAPROXY_CONFIG,
  composeHaproxyConfig,
} from '../scripts/lib/compose-haproxy.ts';

/**
 * docker-compose.yml cannot run here (no Docker engine), so this keeps it honest against the
 * code: every PUSHLINE_* variable it sets exists in the service's config schema, every required
 * one is set, the values parse, and the wiring between containers (brokers, collector, scrape
 * targets, mounted files) points at things that exist. Everything is derived from the schemas at
 * run time, so a new variable in @pushline/config shows up here without editing the test.
 */

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string) => readFileSync(`${root}${path}`, 'utf8');

const SCHEMAS: Readonly<Record<string, EnvSchema>> = serviceEnvSchemas;
/** The variable holding the port each kind serves /metrics on. */
const METRICS_PORT_VAR: Record<string, string> = {
  'connection-server': 'PUSHLINE_INTERNAL_PORT',
  'message-processor': 'PUSHLINE_PROCESSOR_PORT',
  'push-api': 'PUSHLINE_API_OPS_PORT',
  canary: 'PUSHLINE_CANARY_PORT',
};

interface ComposeService {
  image?: string;
  ports?: string[];
  build?: string | { context: string };
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null> | string[];
  healthcheck?: { test?: string[] | string; disable?: boolean };
  volumes?: (string | { source?: string })[];
  depends_on?: Record<string, { condition: string }> | string[];
}

const compose = parse(read('docker-compose.yml'), { merge: true }) as {
  services: Record<string, ComposeService>;
};
const services = Object.entries(compose.services);

/**
 * Secrets compose must refuse to start without (`${VAR:?message}`), and the values this test
 * gives them, as an operator's .env file would.
 */
const REQUIRED_SECRETS: Record<string, string> = {
  PUSHLINE_INTERNAL_TOKEN: 'test-internal-token-0123456789abcdef',
  PUSHLINE_DEVICE_JWT_SECRET: 'test-device-jwt-secret-0123456789abcdef0123',
  PUSHLINE_API_KEY: 'test-api-key-0123456789',
  GRAFANA_ADMIN_PASSWORD: 'test-grafana-password',
};

/**
 * Compose interpolation as on a clean machine with an .env holding the secrets: `${VAR:-default}`
 * takes the default, `${VAR:?message}` (allowed for secrets only) the secret.
 */
function interpolate(value: string, where: string): string {
  return value.replace(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}/g,
    (_m, name: string, op?: string, arg?: string) => {
      if (op === ':?' || op === '?') {
        const secret = REQUIRED_SECRETS[name];
        assert.ok(secret !== undefined, `${where}: \${${name}} is required but is not a secret`);
        assert.ok(arg, `${where}: \${${name}:?} says nothing about how to set it`);
        return secret;
      }
      assert.ok(
        arg !== undefined,
        `${where}: \${${name}} has no default, so a plain \`docker compose up\` fails`,
      );
      return arg;
    },
  );
}

function environment(name: string, service: ComposeService): Record<string, string> {
  const env: Record<string, string> = {};
  const raw = service.environment ?? {};
  const entries: [string, unknown][] = Array.isArray(raw)
    ? raw.map((line) => {
        const eq = line.indexOf('=');
        return eq < 0 ? [line, ''] : [line.slice(0, eq), line.slice(eq + 1)];
      })
    : Object.entries(raw);
  for (const [key, value] of entries) {
    env[key] = interpolate(value === null || value === undefined ? '' : String(value), `${name}.${key}`);
  }
  return env;
}

/** `node services/<kind>/src/main.ts` → kind, for the Pushline containers. */
function pushlineKind(service: ComposeService): string | undefined {
  const command = Array.isArray(service.command) ? service.command.join(' ') : (service.command ?? '');
  return /services\/([a-z-]+)\/src\/main\.ts/.exec(command)?.[1];
}

const pushline = services
  .map(([name, service]) => ({ name, service, kind: pushlineKind(service), env: environment(name, service) }))
  .filter((s): s is typeof s & { kind: string } => s.kind !== undefined);

const urlHost = (url: string) => new URL(url).hostname;

describe('docker-compose.yml', () => {
  it('runs each service kind, and connection-server twice with distinct ids and URLs', () => {
    const kinds = pushline.map((s) => s.kind);
    for (const kind of Object.keys(SCHEMAS)) assert.ok(kinds.includes(kind), `no ${kind} in compose`);
    for (const s of pushline) {
      assert.ok(SCHEMAS[s.kind], `${s.name} runs unknown service ${s.kind}`);
      assert.ok(
        existsSync(`${root}services/${s.kind}/src/main.ts`),
        `${s.name}: services/${s.kind}/src/main.ts`,
      );
    }
    const servers = pushline.filter((s) => s.kind === 'connection-server');
    assert.ok(servers.length >= 2, 'two connection-server replicas');
    const ids = servers.map((s) => s.env['PUSHLINE_SERVER_ID']);
    assert.equal(new Set(ids).size, servers.length, `distinct PUSHLINE_SERVER_ID: ${ids.join(', ')}`);
    for (const s of servers) {
      const url = s.env['PUSHLINE_INTERNAL_URL'];
      assert.ok(url, `${s.name} sets PUSHLINE_INTERNAL_URL (the default would name 0.0.0.0)`);
      assert.equal(urlHost(url), s.name, `${s.name}: internal URL names its own container`);
      assert.equal(new URL(url).port, s.env['PUSHLINE_INTERNAL_PORT'], `${s.name}: internal URL port`);
      assert.equal(s.env['PUSHLINE_INTERNAL_HOST'], '0.0.0.0', `${s.name}: internal port reachable by peers`);
    }
  });

  for (const s of pushline) {
    describe(`${s.name} (${s.kind})`, () => {
      const schema = SCHEMAS[s.kind];
      assert.ok(schema);
      const known = new Set(Object.keys(schema.shape));

      it('sets only PUSHLINE_* variables its config schema declares', () => {
        const unknown = Object.keys(s.env).filter((k) => k.startsWith('PUSHLINE_') && !known.has(k));
        assert.deepEqual(unknown, [], `not in the ${s.kind} schema`);
      });

      it('sets every required variable of its schema', () => {
        const required = describeEnv(schema).filter((v) => v.required);
        const missing = required.filter((v) => !s.env[v.name]).map((v) => v.name);
        assert.deepEqual(missing, [], `required by the ${s.kind} schema`);
      });

      it('has values the schema accepts', () => {
        assert.doesNotThrow(() => parseEnv(schema, s.env));
      });

      it('exports traces to the collector container', () => {
        const endpoint = s.env['OTEL_EXPORTER_OTLP_ENDPOINT'];
        assert.ok(endpoint, 'OTEL_EXPORTER_OTLP_ENDPOINT');
        assert.ok(compose.services[urlHost(endpoint)], `collector ${urlHost(endpoint)} is a compose service`);
      });

      it('reaches Kafka and Redis by their compose names', () => {
        for (const broker of s.env['PUSHLINE_KAFKA_BROKERS']?.split(',') ?? []) {
          assert.ok(compose.services[broker.split(':')[0] ?? ''], `broker ${broker}`);
        }
        assert.ok(compose.services[urlHost(s.env['PUSHLINE_REDIS_URL'] ?? 'redis://missing')], 'redis host');
      });
    });
  }

  it('refuses to start without real secrets instead of falling back to known ones', () => {
    const text = read('docker-compose.yml');
    for (const name of Object.keys(REQUIRED_SECRETS)) {
      assert.match(
        text,
        new RegExp(`\\$\\{${name}:\\?[^}]+\\}`),
        `${name} is required (\${${name}:?message})`,
      );
      assert.doesNotMatch(text, new RegExp(`\\$\\{${name}:?-`), `${name} has a fallback value`);
    }
    assert.doesNotMatch(text, /change-me/i);
    const example = read('.env.example');
    for (const name of Object.keys(REQUIRED_SECRETS)) {
      assert.match(example, new RegExp(`^${name}=$`, 'm'), `.env.example lists ${name}, empty`);
    }
    assert.match(read('.gitignore'), /^\.env$/m, '.env is git-ignored');
    assert.match(read('.dockerignore'), /^\.env$/m, '.env stays out of the image');
  });

  it('runs Redis with an append-only file on a volume and a memory limit that never evicts', () => {
    const redis = compose.services['redis'];
    assert.ok(redis);
    const command = Array.isArray(redis.command) ? redis.command : [];
    const conf = command.find((a) => a.endsWith('.conf'));
    assert.ok(conf, `redis runs with a config file: ${command.join(' ')}`);
    const mounts = (redis.volumes ?? []).map((v) => (typeof v === 'string' ? v : ''));
    const mounted = mounts.find((v) => v.split(':')[1] === conf);
    assert.ok(mounted, `${conf} is mounted`);
    const settings = new Map(
      read(mounted.split(':')[0]?.replace(/^\.\//, '') ?? '')
        .split('\n')
        .filter((line) => line.trim() !== '' && !line.startsWith('#'))
        .map((line) => {
          const [key = '', ...rest] = line.trim().split(/\s+/);
          return [key, rest.join(' ')] as const;
        }),
    );
    assert.equal(settings.get('appendonly'), 'yes');
    assert.equal(settings.get('appendfsync'), 'everysec');
    assert.equal(settings.get('maxmemory-policy'), 'noeviction');
    assert.match(settings.get('maxmemory') ?? '', /^\d+(mb|gb)$/);
    const dataDir = settings.get('dir');
    assert.ok(
      mounts.some((v) => v.split(':')[1] === dataDir && !v.startsWith('.')),
      `${dataDir} is a named volume, so the file outlives the container`,
    );
  });

  it('gives every container a healthcheck', () => {
    for (const [name, service] of services) {
      const test = service.healthcheck?.test;
      assert.ok(test && test.length > 0 && !service.healthcheck?.disable, `${name} has no healthcheck`);
      assert.notDeepEqual(test, ['NONE'], `${name} disables its healthcheck`);
    }
  });

  it('waits for healthy dependencies', () => {
    for (const [name, service] of services) {
      const deps = service.depends_on ?? {};
      if (Array.isArray(deps)) assert.fail(`${name}: depends_on without conditions`);
      for (const [dep, { condition }] of Object.entries(deps)) {
        assert.ok(compose.services[dep], `${name} depends on unknown ${dep}`);
        assert.equal(condition, 'service_healthy', `${name} → ${dep}`);
      }
    }
  });

  it('runs the same Kafka version as the devstack, in KRaft mode, without topic auto-creation', () => {
    const kafka = compose.services['kafka'];
    assert.ok(kafka);
    assert.equal(kafka.image, `apache/kafka:${KAFKA_VERSION}`);
    const env = environment('kafka', kafka);
    assert.equal(env['KAFKA_PROCESS_ROLES'], 'broker,controller');
    assert.equal(env['KAFKA_AUTO_CREATE_TOPICS_ENABLE'], 'false');
    for (const key of [
      'KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR',
      'KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR',
      'KAFKA_TRANSACTION_STATE_LOG_MIN_ISR',
      'KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR',
    ]) {
      assert.equal(env[key], '1', key);
    }
    const clusterId = Buffer.from(env['CLUSTER_ID'] ?? '', 'base64url');
    assert.equal(clusterId.length, 16, 'CLUSTER_ID is a base64url-encoded 16-byte id');
  });

  it('has Prometheus scrape every Pushline container on its metrics port', () => {
    const prometheus = parse(read('deploy/prometheus/prometheus.yml')) as {
      scrape_configs: { static_configs: { targets: string[] }[] }[];
    };
    const targets = new Set(
      prometheus.scrape_configs.flatMap((c) => c.static_configs.flatMap((sc) => sc.targets)),
    );
    // The console is an operator UI that exports no metrics of its own.
    for (const s of pushline.filter((p) => p.kind !== 'console')) {
      const portVar = METRICS_PORT_VAR[s.kind];
      assert.ok(portVar, `${s.kind} has a metrics port`);
      const port =
        s.env[portVar] ?? describeEnv(SCHEMAS[s.kind] as EnvSchema).find((v) => v.name === portVar)?.default;
      assert.ok(targets.has(`${s.name}:${port}`), `no scrape target ${s.name}:${port}`);
    }
  });

  it('has Prometheus load alert rules that exist and are complete', () => {
    const prometheus = parse(read('deploy/prometheus/prometheus.yml')) as { rule_files: string[] };
    assert.ok(prometheus.rule_files.length > 0);
    for (const file of prometheus.rule_files) {
      // deploy/prometheus is mounted at /etc/prometheus.
      const local = file.replace(/^\/etc\/prometheus\//, 'deploy/prometheus/');
      const rules = parse(read(local)) as {
        groups: {
          name: string;
          rules: {
            alert?: string;
            expr?: string;
            labels?: { severity?: string };
            annotations?: { summary?: string };
          }[];
        }[];
      };
      for (const rule of rules.groups.flatMap((g) => g.rules)) {
        assert.ok(rule.alert && rule.expr, `rule in ${local} without alert name or expr`);
        assert.ok(rule.labels?.severity, `${rule.alert} has no severity`);
        assert.ok(rule.annotations?.summary, `${rule.alert} has no summary`);
      }
    }
  });

  it('puts HAProxy in front of the connection servers, configured by the generator from their settings', async () => {
    const haproxy = compose.services['haproxy'];
    assert.ok(haproxy, 'an haproxy service');
    assert.equal(
      read(COMPOSE_HAPROXY_CONFIG),
      composeHaproxyConfig(read('docker-compose.yml')),
      `${COMPOSE_HAPROXY_CONFIG} is stale: run \`node scripts/haproxy-config.ts\``,
    );
    assert.ok(
      (haproxy.volumes ?? []).some(
        (v) => typeof v === 'string' && v.startsWith(`./${COMPOSE_HAPROXY_CONFIG}:`),
      ),
      'haproxy mounts the generated file',
    );
    assert.ok(
      (haproxy.ports ?? []).includes(`${COMPOSE_DEVICE_PORT}:${COMPOSE_DEVICE_PORT}`),
      'devices reach HAProxy',
    );
    for (const s of pushline.filter((p) => p.kind === 'connection-server')) {
      assert.ok(s.env['PUSHLINE_AGENT_PORT'], `${s.name} runs a load agent`);
      assert.deepEqual(s.service.ports ?? [], [], `${s.name} is reached through HAProxy only`);
    }
    // HAProxy itself accepts it (server names resolve at run time, through Docker's DNS).
    const bin = await ensureHaproxy();
    await promisify(execFile)(bin, ['-c', '-q', '-f', `${root}${COMPOSE_HAPROXY_CONFIG}`]);
  });

  it('mounts and builds only files that exist', () => {
    for (const [name, service] of services) {
      for (const volume of service.volumes ?? []) {
        const source = typeof volume === 'string' ? volume.split(':')[0] : volume.source;
        if (source?.startsWith('./'))
          assert.ok(existsSync(`${root}${source.slice(2)}`), `${name} mounts ${source}`);
      }
      const context = typeof service.build === 'string' ? service.build : service.build?.context;
      if (context)
        assert.ok(existsSync(`${root}${context}/Dockerfile`), `${name} builds ${context}/Dockerfile`);
    }
  });
});
