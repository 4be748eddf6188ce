import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Socket } from 'socket.io-client';
import { parse } from 'yaml';
import { topicNames } from '@pushline/config';
import { startPrometheus, type PrometheusInstance } from '@pushline/devstack';
import { RedisDeviceRegistry } from '@pushline/registry';
import { parsePrometheusText, sumSamples, type PromFamily } from '@pushline/telemetry';
import { testInfra, testKafkaClient, testSecret, uniquePrefix, waitUntil } from '@pushline/testkit';
import { Redis } from 'ioredis';
import { startPlatform, type Platform, type RunningService } from '../../scripts/lib/platform.ts';
import { connectDevice, type TestDevice } from '../support/devices.ts';

/**
 * The platform as `npm start` runs it (every service a child process, the canary included),
 * scraped by a real Prometheus (Debian's package) on a free port with the project's alert rules
 * loaded. After a mix of traffic that takes every path (async, direct, user, topic, d2d, stored
 * and drained, rejected, timed out, dead-lettered), every query of the Grafana dashboard is
 * evaluated through Prometheus' HTTP API and must parse and return numbers. Then two faults are
 * injected for real: the processor is frozen (SIGSTOP) and must show as growing lag measured
 * from the broker, and a connection server is killed (SIGKILL) and the canary must report it.
 */

const root = join(import.meta.dirname, '..', '..');
const read = (path: string) => readFileSync(join(root, path), 'utf8');

interface DashboardTarget {
  readonly expr: string;
  readonly legendFormat?: string;
}
interface DashboardPanel {
  readonly type: string;
  readonly title: string;
  readonly targets?: DashboardTarget[];
}

let platform: Platform;
let prometheus: PrometheusInstance;
let redis: Redis;
let registry: RedisDeviceRegistry;
let logDir: string;
const sockets: Socket[] = [];
const devices: Record<string, TestDevice> = {};
const credentials = {
  apiKey: `k-${testSecret()}`,
  internalToken: testSecret(),
  deviceJwtSecret: `${testSecret()}${testSecret()}`,
};

const service = (name: string): RunningService => {
  const found = platform.services.find((s) => s.name === name);
  assert.ok(found, `service ${name}`);
  return found;
};
/** The connection servers as `connectDevice` wants them (ids as scripts/lib/platform.ts names them). */
const server = (i: 1 | 2) => ({ serverId: `dev-cs-${i}`, deviceUrl: platform.deviceUrls[i - 1] ?? '' });

async function call(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${platform.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${credentials.apiKey}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}

async function scrape(name: string): Promise<PromFamily[]> {
  const res = await fetch(`${service(name).opsUrl}/metrics`);
  assert.equal(res.status, 200);
  return parsePrometheusText(await res.text());
}

interface PromVector {
  readonly metric: Record<string, string>;
  readonly value: [number, string];
}

/** An instant query through Prometheus' HTTP API; throws with Prometheus' error when it does not parse. */
async function query(expr: string): Promise<PromVector[]> {
  const url = `${prometheus.url}/api/v1/query?query=${encodeURIComponent(expr)}`;
  const res = await fetch(url);
  const body = (await res.json()) as {
    status: string;
    error?: string;
    data?: { resultType: string; result: PromVector[] };
  };
  if (body.status !== 'success' || !body.data) throw new Error(`${expr}: ${body.error ?? res.status}`);
  assert.equal(body.data.resultType, 'vector', expr);
  return body.data.result;
}
const scalar = async (expr: string) => Number((await query(expr))[0]?.value[1] ?? Number.NaN);

before(async () => {
  const infra = testInfra();
  const prefix = uniquePrefix('live');
  logDir = mkdtempSync(join(tmpdir(), 'pushline-live-'));
  platform = await startPlatform({
    credentials,
    logDir,
    preferDefaultPorts: false,
    readyTimeoutMs: 90_000,
    env: {
      ...process.env,
      PUSHLINE_KAFKA_BROKERS: infra.kafkaBrokers.join(','),
      PUSHLINE_REDIS_URL: infra.redisUrl,
      PUSHLINE_TOPIC_PREFIX: `${prefix}.`,
      PUSHLINE_KEY_PREFIX: `${prefix}:`,
      PUSHLINE_KAFKA_PARTITIONS: '3',
      PUSHLINE_PROCESSOR_GROUP_ID: `${prefix}-processors`,
      PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS: '6000',
      PUSHLINE_DELIVERY_TIMEOUT_MS: '1500',
      PUSHLINE_LOAD_REPORT_MS: '1000',
      PUSHLINE_DRAIN_WINDOW_MS: '0',
      PUSHLINE_CLOSE_GRACE_MS: '0',
      PUSHLINE_CANARY_INTERVAL_MS: '1000',
      PUSHLINE_CANARY_TIMEOUT_MS: '4000',
      PUSHLINE_LOG_LEVEL: process.env['PUSHLINE_TEST_LOG'] ?? 'warn',
    },
  });
  redis = new Redis(infra.redisUrl);
  registry = new RedisDeviceRegistry({ redis, keyPrefix: `${prefix}:` });

  const jobOf = (name: string) => (name.startsWith('connection-server') ? 'connection-server' : name);
  const jobs = new Map<string, string[]>();
  for (const s of scraped())
    jobs.set(jobOf(s.name), [...(jobs.get(jobOf(s.name)) ?? []), new URL(s.opsUrl).host]);
  prometheus = await startPrometheus({
    config: {
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      scrape_configs: [...jobs].map(([job, targets]) => ({ job_name: job, static_configs: [{ targets }] })),
    },
    ruleFiles: { 'alerts.yml': read('deploy/prometheus/alerts.yml') },
  });

  // Traffic only after every target has been scraped twice: rate() measures increases between
  // samples, so what happened before the first scrape would be invisible to it.
  await waitUntil(async () => (await query('count_over_time(up[5m]) >= 2')).length === scraped().length, {
    timeoutMs: 30_000,
    what: 'every service scraped twice',
  });

  const connect = (
    i: 1 | 2,
    id: string,
    user: string,
    behaviour?: TestDevice['behaviour'],
    topics?: string[],
  ) =>
    connectDevice({
      server: server(i),
      registry,
      jwtSecret: credentials.deviceJwtSecret,
      deviceId: id,
      userId: user,
      ...(behaviour ? { behaviour } : {}),
      ...(topics ? { claims: { topics } } : {}),
      track: (socket) => sockets.push(socket),
    });
  devices['d1'] = await connect(1, 'd1', 'u1', 'ack', ['news']);
  devices['d2'] = await connect(2, 'd2', 'u1');
  devices['r1'] = await connect(1, 'r1', 'u2', 'reject');
  devices['s1'] = await connect(2, 's1', 'u3', 'silent');
  assert.deepEqual(await devices['d1'].request('subscribe', { topic: 'news' }), { ok: true, topic: 'news' });

  const to = (id: string, extra: object = {}) => ({
    target: { type: 'device', id },
    payload: { to: id },
    ...extra,
  });
  const published = await call('POST', '/v1/publish', {
    messages: [
      to('d1'),
      to('d2'),
      to('r1'),
      to('s1'),
      to('nobody'),
      to('o1', { ttlSeconds: 600 }),
      { target: { type: 'user', id: 'u1' }, payload: { user: 1 } },
      { target: { type: 'topic', id: 'news' }, payload: { topic: 1 } },
    ],
  });
  assert.equal(published.status, 202, JSON.stringify(published.body));
  for (const [id, status] of [
    ['d1', 200],
    ['r1', 422],
    ['s1', 504],
    ['nobody', 404],
  ] as const) {
    const res = await call('POST', `/v1/devices/${id}/messages`, { payload: { direct: id } });
    assert.equal(res.status, status, `direct push to ${id}: ${JSON.stringify(res.body)}`);
  }
  assert.deepEqual(
    Object.keys((await devices['d1'].request('send', { to: 'd2', payload: { d2d: 1 } })) as object).includes(
      'ok',
    ),
    true,
  );
  const producer = testKafkaClient(`${prefix}-poison`).producer();
  await producer.start();
  try {
    await producer.send(topicNames(`${prefix}.`).pushRequests, [{ key: 'device:x', value: 'not json' }]);
  } finally {
    await producer.close();
  }
  // The stored message reaches o1 when it connects: drained by the connection server.
  await waitUntil(
    async () =>
      sumSamples(await scrape('message-processor'), 'pushline_processor_outcomes_total', {
        outcome: 'stored',
      }) >= 1,
    { timeoutMs: 20_000, what: 'the message for o1 stored' },
  );
  devices['o1'] = await connect(1, 'o1', 'u4');
  await waitUntil(() => devices['o1']?.received.length === 1, { what: 'the stored message drained to o1' });
});

/** Every service Prometheus scrapes: all but the console, an operator UI that exports no metrics. */
function scraped() {
  return platform.services.filter((s) => s.name !== 'console');
}

after(async () => {
  for (const s of sockets) s.disconnect();
  await prometheus?.stop();
  await platform?.stop();
  await redis?.quit();
  rmSync(logDir, { recursive: true, force: true });
});

describe('a live Prometheus scraping the platform', () => {
  it('loads the alert rules and scrapes every service', async () => {
    const res = (await (await fetch(`${prometheus.url}/api/v1/rules`)).json()) as {
      data: { groups: { rules: { name: string; health: string }[] }[] };
    };
    const loaded = res.data.groups.flatMap((g) => g.rules);
    const declared = (
      parse(read('deploy/prometheus/alerts.yml')) as { groups: { rules: unknown[] }[] }
    ).groups.flatMap((g) => g.rules);
    assert.equal(loaded.length, declared.length);
    await waitUntil(async () => (await query('up == 1')).length === scraped().length, {
      timeoutMs: 20_000,
      what: 'every service scraped',
    });
    const jobs = new Set((await query('up')).map((v) => v.metric['job']));
    assert.deepEqual([...jobs].sort(), ['canary', 'connection-server', 'message-processor', 'push-api']);
  });

  it('answers every dashboard query with numbers (no error, no empty result, no NaN)', async () => {
    // Wait until Prometheus has the whole mix, the drain and the canary's first probes.
    await waitUntil(
      async () =>
        (await scalar('sum(pushline_processor_records_total{result=~"processed|dlq"})')) >= 9 &&
        (await scalar('sum(pushline_offline_drained_total{outcome="delivered"})')) >= 1 &&
        (await query('sum by (server) (pushline_canary_probes_total{result="ok",path="async"}) > 0'))
          .length === 2,
      { timeoutMs: 30_000, what: 'the traffic mix scraped' },
    );
    const dashboard = JSON.parse(read('deploy/grafana/dashboards/pushline.json')) as {
      panels: DashboardPanel[];
    };
    const problems: string[] = [];
    let checked = 0;
    for (const panel of dashboard.panels.filter((p) => p.type !== 'row')) {
      for (const target of panel.targets ?? []) {
        // Grafana's rate interval; 5m holds everything this test did.
        const expr = target.expr.replaceAll('$__rate_interval', '5m');
        const what = `"${panel.title}" / ${target.legendFormat ?? expr}`;
        checked++;
        try {
          const result = await query(expr);
          if (result.length === 0) problems.push(`${what}: no data`);
          for (const v of result) {
            if (!Number.isFinite(Number(v.value[1])))
              problems.push(`${what}: ${v.value[1]} for ${JSON.stringify(v.metric)}`);
          }
        } catch (err) {
          problems.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    }
    assert.ok(checked > 40, `${checked} queries`);
    assert.deepEqual(problems, []);
  });

  it('shows publish → ack of drained messages (source offline) next to async', async () => {
    const p99 = await query(
      'histogram_quantile(0.99, sum by (le, source) (rate(pushline_publish_to_ack_seconds_bucket[5m])))' +
        ' and on (source) sum by (source) (rate(pushline_publish_to_ack_seconds_count[5m])) > 0',
    );
    assert.deepEqual(p99.map((v) => v.metric['source']).sort(), ['async', 'offline']);
    // The drain happened on the connection server, which records it.
    assert.equal(
      await scalar('sum(pushline_publish_to_ack_seconds_count{source="offline",job="connection-server"})'),
      1,
    );
  });

  it('labels samples with instance_id, never exported_instance', async () => {
    assert.deepEqual(await query('count({exported_instance!=""})'), []);
    const ids = await query('count by (job, instance_id) (pushline_process_process_start_time_seconds)');
    assert.equal(ids.length, scraped().length);
    assert.ok(ids.every((v) => v.metric['instance_id']));
  });
});

describe('faults', () => {
  it('a frozen processor shows as lag growing at the broker, and the lag drains after it thaws', async () => {
    const processor = service('message-processor');
    const lag = async () => sumSamples(await scrape('canary'), 'pushline_consumer_group_lag');
    await waitUntil(async () => (await lag()) === 0, { timeoutMs: 20_000, what: 'no lag before the fault' });
    process.kill(processor.pid, 'SIGSTOP');
    try {
      const published = await call('POST', '/v1/publish', {
        messages: Array.from({ length: 20 }, (_, i) => ({
          target: { type: 'device', id: 'd1' },
          payload: { i },
        })),
      });
      assert.equal(published.status, 202);
      // The processor cannot report anything now; the broker still knows what it has not committed.
      await waitUntil(async () => (await lag()) >= 20, {
        timeoutMs: 15_000,
        what: 'lag of at least 20 at the broker',
      });
      await waitUntil(async () => (await scalar('sum(pushline_consumer_group_lag)')) >= 20, {
        timeoutMs: 15_000,
        what: 'Prometheus to see the lag',
      });
    } finally {
      process.kill(processor.pid, 'SIGCONT');
    }
    await waitUntil(async () => (await lag()) === 0, {
      timeoutMs: 45_000,
      what: 'the lag to drain after SIGCONT',
    });
    await waitUntil(
      () =>
        (devices['d1']?.received.filter((m) => (m.payload as { i?: number }).i !== undefined).length ?? 0) >=
        20,
      {
        timeoutMs: 30_000,
        what: 'd1 to get the 20 messages',
      },
    );
  });

  it('kill -9 of a connection server: the canary reports it within seconds, the other server stays green', async () => {
    const failed = (families: PromFamily[], serverId: string) =>
      sumSamples(families, 'pushline_canary_probes_total', { server: serverId }) -
      sumSamples(families, 'pushline_canary_probes_total', { server: serverId, result: 'ok' });
    const ok = (families: PromFamily[], serverId: string) =>
      sumSamples(families, 'pushline_canary_probes_total', { server: serverId, result: 'ok' });
    const before = await scrape('canary');
    assert.equal(sumSamples(before, 'pushline_canary_device_connected', { server: 'dev-cs-2' }), 1);
    process.kill(service('connection-server-2').pid, 'SIGKILL');
    const after = await waitUntil(
      async () => {
        const now = await scrape('canary');
        const reported =
          sumSamples(now, 'pushline_canary_device_connected', { server: 'dev-cs-2' }) === 0 &&
          failed(now, 'dev-cs-2') > failed(before, 'dev-cs-2');
        return reported ? now : undefined;
      },
      { timeoutMs: 15_000, what: 'the canary to report dev-cs-2 down' },
    );
    // Probes through the surviving server keep arriving.
    await waitUntil(async () => ok(await scrape('canary'), 'dev-cs-1') > ok(after, 'dev-cs-1'), {
      timeoutMs: 15_000,
      what: 'probes via dev-cs-1 to keep succeeding',
    });
    assert.equal(sumSamples(after, 'pushline_canary_device_connected', { server: 'dev-cs-1' }), 1);
  });
});
