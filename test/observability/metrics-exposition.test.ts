import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { waitUntil } from '@pushline/testkit';
import { sumSamples, type PromFamily, type PromSample } from '@pushline/telemetry';
import { startPlatform, type Platform, type ScrapedService } from '../support/platform.ts';

/**
 * Every service's /metrics is valid Prometheus text (checked by a strict parser), follows the
 * naming and cardinality rules, and agrees with what is built on it: the Grafana dashboard and
 * the alert rules only query metrics that exist, and docs/observability.md documents exactly the
 * metrics the services export.
 *
 * Every counter and histogram series also exists from boot with 0 for every known label value,
 * so `rate()` sees the first event and the stage identities hold from the first scrape: the
 * series docs/observability.md lists ("Every series exists from boot") are checked in a scrape
 * taken right after the services started, before any traffic.
 */

const root = new URL('../../', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, root), 'utf8');
const docs = read('docs/observability.md');

/** Label names that would carry per-device, per-user or per-message values. */
const HIGH_CARDINALITY = /^(device|user|message|request|connection|socket|tenant)(_?id)?$|^id$/i;

interface DocumentedFamily {
  readonly family: string;
  /** Label → values; `@openapi` and `@servers` are expanded by the test. */
  readonly labels: ReadonlyMap<string, readonly string[]>;
  readonly movesAtBoot: boolean;
  /**
   * A gauge per held partition (`@held`): its series come and go with the consumer group's
   * assignment, so none exists at boot; checked once the processor has taken records.
   */
  readonly followsAssignment: boolean;
  readonly canary: boolean;
  readonly line: string;
}

function documentedFamilies(): DocumentedFamily[] {
  const begin = docs.indexOf('<!-- boot-series:begin -->');
  const end = docs.indexOf('<!-- boot-series:end -->');
  assert.ok(begin > 0 && end > begin, 'docs/observability.md has the boot-series block');
  const lines = docs
    .slice(begin, end)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('pushline_'));
  return lines.map((line) => {
    const [series = '', comment = ''] = line.split('#').map((p) => p.trim());
    const match = /^([a-z0-9_]+)\{(.*)\}$/.exec(series);
    assert.ok(match, `unreadable line: ${line}`);
    const labels = new Map<string, string[]>();
    const body = match[2] ?? '';
    if (body.includes('@openapi')) {
      // route,method[,status]=@openapi
      for (const name of body.replace('=@openapi', '').split(',')) labels.set(name.trim(), ['@openapi']);
    } else {
      for (const part of body.split(',')) {
        const [name = '', values = ''] = part.split('=').map((p) => p.trim());
        labels.set(name, values.split('|'));
      }
    }
    return {
      family: match[1] ?? '',
      labels,
      movesAtBoot: comment.includes('moves at boot'),
      followsAssignment: comment.includes('follows assignment'),
      canary: comment.includes('canary') || match[1]?.startsWith('pushline_canary_') === true,
      line,
    };
  });
}

/** Expected label sets of one documented family. */
function combinations(labels: ReadonlyMap<string, readonly string[]>): Record<string, string>[] {
  let out: Record<string, string>[] = [{}];
  for (const [name, values] of labels) out = out.flatMap((c) => values.map((v) => ({ ...c, [name]: v })));
  return out;
}

/** The samples that stand for a series: the counter itself, or a histogram's `_count`. */
function seriesSamples(family: PromFamily): PromSample[] {
  return family.type === 'histogram'
    ? family.samples.filter((s) => s.name === `${family.name}_count`)
    : family.samples;
}

const matches = (sample: PromSample, labels: Record<string, string>) =>
  Object.entries(labels).every(([k, v]) => sample.labels[k] === v);

let platform: Platform;
let scraped: ScrapedService[];
/** Right after boot, before any traffic (and before the canary). */
let boot: ScrapedService[];
let operations: { route: string; method: string; statuses: string[] }[];
/** The canary right after it found the connection servers. */
let canaryBoot: ScrapedService[];
let documented: DocumentedFamily[];

before(async () => {
  documented = documentedFamilies();
  platform = await startPlatform('metrics');
  boot = await platform.scrape();
  operations = await openApiOperations();
  // With the canary: the dashboard and the alerts also query its metrics.
  const canary = await platform.startCanary();
  await waitUntil(() => canary.canary.servers.length === platform.servers.length, {
    what: 'the canary to find every connection server',
  });
  canaryBoot = (await platform.scrape()).filter((s) => s.name === 'canary');
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

/** Checks every documented series of `families` in `scraped`; returns the problems found. */
function check(
  scraped: ScrapedService[],
  families: DocumentedFamily[],
  expand: (d: DocumentedFamily) => Record<string, string>[],
) {
  const problems: string[] = [];
  for (const doc of families) {
    const exporters = scraped.flatMap((s) => {
      const family = s.families.find((f) => f.name === doc.family);
      return family ? [{ service: s.name, family }] : [];
    });
    if (exporters.length === 0) {
      problems.push(`${doc.family}: no service exports it`);
      continue;
    }
    for (const { service, family } of exporters) {
      for (const labels of expand(doc)) {
        const found = seriesSamples(family).filter((s) => matches(s, labels));
        const what = `${service}: ${doc.family}${JSON.stringify(labels)}`;
        if (found.length === 0) problems.push(`${what} is missing`);
        else if (!doc.movesAtBoot && found.some((s) => s.value !== 0)) problems.push(`${what} is not 0`);
      }
    }
  }
  return problems;
}

describe('right after boot, before any traffic', () => {
  it('every documented series of the API, processor and connection servers exists, at 0', () => {
    const problems = check(
      boot,
      documented.filter((d) => !d.canary && !d.followsAssignment),
      (d) => {
        if (d.labels.get('route')?.[0] !== '@openapi') return combinations(d.labels);
        return operations.flatMap((op) =>
          d.labels.has('status')
            ? op.statuses.map((status) => ({ route: op.route, method: op.method, status }))
            : [{ route: op.route, method: op.method }],
        );
      },
    );
    assert.deepEqual(problems, []);
  });

  it('no labelled family is created on first use, and the docs list every labelled family', () => {
    const listed = new Set(documented.map((d) => d.family));
    const followsAssignment = new Set(documented.filter((d) => d.followsAssignment).map((d) => d.family));
    const problems: string[] = [];
    for (const s of boot) {
      for (const family of s.families) {
        if (!family.name.startsWith('pushline_') || family.name.startsWith('pushline_process_')) continue;
        if (family.samples.length === 0 && !followsAssignment.has(family.name))
          problems.push(`${s.name}: ${family.name} has no series yet`);
        const labelled = family.samples.some((x) =>
          Object.keys(x.labels).some((k) => !['service', 'instance_id', 'le'].includes(k)),
        );
        if (labelled && !listed.has(family.name))
          problems.push(`${s.name}: ${family.name} is not in the docs' list`);
      }
    }
    assert.deepEqual(problems, []);
  });

  it('the per-partition gauges have a series for each partition the processor took records from', () => {
    const perPartition = documented.filter((d) => d.followsAssignment);
    assert.ok(perPartition.length > 0, 'the docs mark the per-partition gauges');
    const processor = scraped.find((s) => s.name === 'message-processor');
    assert.ok(processor);
    for (const doc of perPartition) {
      assert.deepEqual([...doc.labels.keys()], ['partition'], doc.line);
      const family: PromFamily | undefined = processor.families.find((f) => f.name === doc.family);
      assert.ok(family, `${doc.family} is exported by the processor`);
      assert.equal(family.type, 'gauge', `${doc.family}: a gauge, not a counter created on first use`);
      // The publish above was processed, so its partition is held and has a series.
      assert.ok(
        family.samples.length > 0,
        `${doc.family} has a series for the partition it took records from`,
      );
      for (const sample of family.samples) assert.match(sample.labels['partition'] ?? '', /^\d+$/, doc.line);
    }
  });

  it("the canary's series exist for every server it probes as soon as it discovered them", () => {
    const servers = platform.servers.map((s) => s.serverId).sort();
    const problems = check(
      canaryBoot,
      documented.filter((d) => d.canary),
      (d) =>
        combinations(
          new Map([...d.labels].map(([name, values]) => [name, values[0] === '@servers' ? servers : values])),
        ),
    );
    assert.deepEqual(problems, []);
  });
});

/** Every operation of the API with each status it declares, as express names its route. */
async function openApiOperations(): Promise<{ route: string; method: string; statuses: string[] }[]> {
  const res = await platform.call('GET', '/v1/openapi.json');
  assert.equal(res.status, 200);
  const doc = res.body as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
  const ops = Object.entries(doc.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, op]) => ({
      route: path.replace(/\{([A-Za-z0-9_]+)\}/g, ':$1'),
      method: method.toUpperCase(),
      statuses: Object.keys(op.responses),
    })),
  );
  assert.ok(ops.length >= 5, `${ops.length} operations`);
  return ops;
}
