import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { waitUntil } from '@pushline/testkit';
import { sumSamples, type PromFamily } from '@pushline/telemetry';
import { startPlatform, type Platform, type ScrapedService } from '../support/platform.ts';

/**
 * Every service's /metrics is valid Prometheus text (checked by a strict parser), follows the
 * naming and cardinality rules, and agrees with what is built on it: the Grafana dashboard and
 * the alert rules only query metrics that exist, and docs/observability.md documents exactly the
 * metrics the services export.
 */

const root = new URL('../../', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, root), 'utf8');

/** Label names that would carry per-device, per-user or per-message values. */
const HIGH_CARDINALITY = /^(device|user|message|request|connection|socket|tenant)(_?id)?$|^id$/i;

let platform: Platform;
let scraped: ScrapedService[];

before(async () => {
  // With the canary: the dashboard and the alerts also query its metrics.
  platform = await startPlatform('metrics', { canary: true });
  const [server] = platform.servers;
  assert.ok(server);
  const device = await platform.connect(server, 'm1', 'u1');
  const direct = await platform.call('POST', '/v1/devices/m1/messages', { payload: 1 });
  assert.equal(direct.status, 200);
  const published = await platform.call('POST', '/v1/publish', {
    target: { type: 'device', id: 'm1' },
    payload: 2,
  });
  assert.equal(published.status, 202);
  await waitUntil(() => device.received.length === 2, { what: 'both messages at the device' });
  await waitUntil(
    async () => {
      scraped = await platform.scrape();
      const p = scraped.find((s) => s.name === 'message-processor');
      const c = scraped.find((s) => s.name === 'canary');
      return (
        p &&
        c &&
        // The canary publishes too, so at least ours.
        sumSamples(p.families, 'pushline_processor_records_total', { result: 'processed' }) >= 1 &&
        sumSamples(c.families, 'pushline_canary_probes_total', { result: 'ok' }) > 0
      );
    },
    { what: 'the publish processed and a canary probe through' },
  );
});
after(() => platform.close());

const allFamilies = () => scraped.flatMap((s) => s.families);
const exported = () => new Set(allFamilies().map((f) => f.name));
const isPushline = (f: PromFamily) =>
  f.name.startsWith('pushline_') && !f.name.startsWith('pushline_process_');

/** Metric names in a PromQL expression, with histogram suffixes mapped to their family. */
function metricsIn(expr: string): string[] {
  const names = expr.match(/\bpushline_[a-z0-9_]+/g) ?? [];
  return names.map((n) => {
    const base = n.replace(/_(bucket|count|sum)$/, '');
    return base !== n && exported().has(base) ? base : n;
  });
}

describe('/metrics', () => {
  it('is served by every instance as Prometheus text 0.0.4 that parses strictly', () => {
    const kinds = scraped.map((s) => (s.name.includes('-cs-') ? 'connection-server' : s.name));
    assert.deepEqual([...new Set(kinds)].sort(), [
      'canary',
      'connection-server',
      'message-processor',
      'push-api',
    ]);
    for (const s of scraped) {
      assert.ok(s.families.length > 0, s.url);
      assert.match(s.text, /^# HELP /, s.url);
    }
  });

  it('declares HELP and TYPE for every family', () => {
    for (const s of scraped) {
      for (const f of s.families) {
        assert.ok(f.help, `${s.name}: ${f.name} has no HELP`);
        assert.notEqual(f.type, 'untyped', `${s.name}: ${f.name} has no TYPE`);
      }
    }
  });

  it('names metrics by convention and keeps labels low-cardinality', () => {
    for (const s of scraped) {
      for (const f of s.families.filter(isPushline)) {
        if (f.type === 'counter') assert.match(f.name, /_total$/, `${s.name}: counter ${f.name}`);
        if (f.type === 'histogram')
          assert.match(f.name, /_(seconds|bytes)$/, `${s.name}: histogram ${f.name}`);
        if (f.type === 'gauge') assert.doesNotMatch(f.name, /_total$/, `${s.name}: gauge ${f.name}`);
        for (const sample of f.samples) {
          for (const label of Object.keys(sample.labels)) {
            assert.doesNotMatch(label, HIGH_CARDINALITY, `${s.name}: ${f.name} has label ${label}`);
          }
        }
      }
    }
  });

  it('labels every sample with its service', () => {
    for (const s of scraped) {
      const service = s.name.includes('-cs-') ? 'connection-server' : s.name;
      for (const sample of s.families.flatMap((f) => f.samples)) {
        assert.equal(sample.labels['service'], service, `${s.name}: ${sample.name}`);
      }
    }
  });
});

describe('what is built on the metrics', () => {
  it('the Grafana dashboard queries only exported metrics', () => {
    const dashboard = JSON.parse(read('deploy/grafana/dashboards/pushline.json')) as {
      uid: string;
      panels: { type: string; title: string; targets?: { expr: string }[] }[];
    };
    assert.ok(dashboard.uid);
    const queried = dashboard.panels.flatMap((p) => (p.targets ?? []).flatMap((t) => metricsIn(t.expr)));
    assert.ok(queried.length > 20);
    const missing = [...new Set(queried)].filter((name) => !exported().has(name));
    assert.deepEqual(missing, [], 'dashboard queries metrics no service exports');
    for (const p of dashboard.panels.filter((p) => p.type !== 'row')) {
      assert.ok((p.targets ?? []).length > 0, `panel ${p.title} has no query`);
    }
  });

  it('the alert rules query only exported metrics', () => {
    const rules = parse(read('deploy/prometheus/alerts.yml')) as { groups: { rules: { expr: string }[] }[] };
    const queried = rules.groups.flatMap((g) => g.rules.flatMap((r) => metricsIn(r.expr)));
    assert.ok(queried.length > 10);
    const missing = [...new Set(queried)].filter((name) => !exported().has(name));
    assert.deepEqual(missing, [], 'alert rules query metrics no service exports');
  });

  it('docs/observability.md documents exactly the exported metrics', () => {
    const docs = read('docs/observability.md');
    const documented = new Set((docs.match(/\bpushline_[a-z0-9_]+/g) ?? []).filter((n) => !n.endsWith('_')));
    const families = new Set(
      allFamilies()
        .filter(isPushline)
        .map((f) => f.name),
    );
    const undocumented = [...families].filter((n) => !documented.has(n));
    assert.deepEqual(undocumented, [], 'exported but not documented');
    // Default process metrics are documented by their prefix; one named as an example must exist.
    const processFamilies = new Set(allFamilies().map((f) => f.name));
    const stale = [...documented].filter((n) =>
      n.startsWith('pushline_process_')
        ? !processFamilies.has(n)
        : !families.has(n) && !families.has(n.replace(/_(bucket|count|sum)$/, '')),
    );
    assert.deepEqual(stale, [], 'documented but not exported');
  });
});
