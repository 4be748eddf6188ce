import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { waitUntil } from '@pushline/testkit';
import type { PromFamily, PromSample } from '@pushline/telemetry';
import { startPlatform, type Platform, type ScrapedService } from '../support/platform.ts';

/**
 * Every counter and histogram series exists from boot with 0 for every known label value, so
 * `rate()` sees the first event and the stage identities hold from the first scrape. The series
 * are the ones docs/observability.md lists ("Every series exists from boot"); this scrapes every
 * service right after it started, before any traffic, and finds each of them.
 */

const docs = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'observability.md'), 'utf8');

interface DocumentedFamily {
  readonly family: string;
  /** Label → values; `@openapi` and `@servers` are expanded by the test. */
  readonly labels: ReadonlyMap<string, readonly string[]>;
  readonly movesAtBoot: boolean;
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
let boot: ScrapedService[];
let documented: DocumentedFamily[];

before(async () => {
  documented = documentedFamilies();
  platform = await startPlatform('boot');
  // Right after boot, before anything is sent.
  boot = await platform.scrape();
});
after(() => platform.close());

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
  it('every documented series of the API, processor and connection servers exists, at 0', async () => {
    const operations = await openApiOperations();
    const problems = check(
      boot,
      documented.filter((d) => !d.canary),
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
    const problems: string[] = [];
    for (const s of boot) {
      for (const family of s.families) {
        if (!family.name.startsWith('pushline_') || family.name.startsWith('pushline_process_')) continue;
        if (family.samples.length === 0) problems.push(`${s.name}: ${family.name} has no series yet`);
        const labelled = family.samples.some((x) =>
          Object.keys(x.labels).some((k) => !['service', 'instance_id', 'le'].includes(k)),
        );
        if (labelled && !listed.has(family.name))
          problems.push(`${s.name}: ${family.name} is not in the docs' list`);
      }
    }
    assert.deepEqual(problems, []);
  });

  it("the canary's series exist for every server it probes as soon as it discovered them", async () => {
    const canary = await platform.startCanary();
    const servers = platform.servers.map((s) => s.serverId).sort();
    await waitUntil(() => canary.canary.servers.length === servers.length, {
      what: 'the canary to find both servers',
    });
    const scraped = (await platform.scrape()).filter((s) => s.name === 'canary');
    const problems = check(
      scraped,
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
