import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Counter,
  createMetricsRegistry,
  END_TO_END_BUCKETS_S,
  PUBLISH_TO_ACK_SOURCES,
  publishToAckHistogram,
  ReservedLabelError,
  stageHistogram,
  findSamples,
  Gauge,
  Histogram,
  LATENCY_BUCKETS_S,
  parsePrometheusText,
  PromParseError,
  stageCounter,
  sumSamples,
} from '@pushline/telemetry';

describe('createMetricsRegistry', () => {
  it('serves valid Prometheus text with default, counter, gauge and histogram metrics', async () => {
    const registry = createMetricsRegistry({ service: 'svc', instance_id: 'i1' });
    const counter = new Counter({
      name: 'pushline_test_things_total',
      help: 'Things, with "quotes" and a back\\slash\nand a newline.',
      labelNames: ['outcome'],
      registers: [registry],
    });
    counter.inc({ outcome: 'ok' }, 3);
    counter.inc({ outcome: 'odd "value"\\' });
    new Gauge({ name: 'pushline_test_level', help: 'Level.', registers: [registry] }).set(-2.5);
    const histogram = new Histogram({
      name: 'pushline_test_latency_seconds',
      help: 'Latency.',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS_S,
      registers: [registry],
    });
    for (const v of [0.0001, 0.003, 0.2, 50]) histogram.observe({ route: 'a' }, v);
    histogram.observe({ route: 'b' }, 1);

    const families = parsePrometheusText(await registry.metrics());
    const byName = new Map(families.map((f) => [f.name, f]));
    assert.equal(byName.get('pushline_test_things_total')?.type, 'counter');
    assert.equal(
      byName.get('pushline_test_things_total')?.help,
      'Things, with "quotes" and a back\\slash\nand a newline.',
    );
    assert.equal(sumSamples(families, 'pushline_test_things_total', { outcome: 'ok', service: 'svc' }), 3);
    assert.equal(findSamples(families, 'pushline_test_things_total', { outcome: 'odd "value"\\' }).length, 1);
    assert.equal(sumSamples(families, 'pushline_test_level'), -2.5);
    assert.equal(sumSamples(families, 'pushline_test_latency_seconds_count', { route: 'a' }), 4);
    assert.equal(
      sumSamples(families, 'pushline_test_latency_seconds_bucket', { route: 'a', le: '0.004' }),
      2,
    );
    assert.ok(
      families.some((f) => f.name.startsWith('pushline_process_')),
      'default process metrics present',
    );
    for (const s of families.flatMap((f) => f.samples)) assert.equal(s.labels['instance_id'], 'i1');
  });

  it('refuses the labels Prometheus sets on every target, which would come back as exported_*', () => {
    for (const label of ['instance', 'job']) {
      assert.throws(
        () => createMetricsRegistry({ service: 'svc', [label]: 'x' }, false),
        (err: unknown) => err instanceof ReservedLabelError && err.label === label,
      );
    }
  });

  it('keeps registries apart, so two instances in one process do not mix', async () => {
    const a = createMetricsRegistry({ instance_id: 'a' }, false);
    const b = createMetricsRegistry({ instance_id: 'b' }, false);
    for (const registry of [a, b])
      new Counter({ name: 'pushline_test_x_total', help: 'x', registers: [registry] });
    (a.getSingleMetric('pushline_test_x_total') as Counter).inc(5);
    assert.equal(sumSamples(parsePrometheusText(await b.metrics()), 'pushline_test_x_total'), 0);
    assert.equal(sumSamples(parsePrometheusText(await a.metrics()), 'pushline_test_x_total'), 5);
  });
});

describe('stageCounter', () => {
  it('exports every label combination at 0 before anything happens', async () => {
    const registry = createMetricsRegistry({}, false);
    const c = stageCounter({
      name: 'pushline_test_stage_total',
      help: 'Stage.',
      labels: { outcome: ['delivered', 'timeout'], source: ['direct', 'async', 'd2d'] },
      registry,
    });
    let families = parsePrometheusText(await registry.metrics());
    assert.equal(findSamples(families, 'pushline_test_stage_total').length, 6);
    assert.equal(sumSamples(families, 'pushline_test_stage_total'), 0);
    c.inc({ outcome: 'timeout', source: 'd2d' });
    families = parsePrometheusText(await registry.metrics());
    assert.equal(sumSamples(families, 'pushline_test_stage_total', { outcome: 'timeout' }), 1);
    assert.equal(findSamples(families, 'pushline_test_stage_total').length, 6);
  });
});

describe('stageHistogram', () => {
  it('exports empty buckets for every label combination before anything is observed', async () => {
    const registry = createMetricsRegistry({}, false);
    const h = stageHistogram({
      name: 'pushline_test_stage_seconds',
      help: 'Stage latency.',
      labels: { source: ['direct', 'async'], outcome: ['delivered', 'timeout'] },
      buckets: [0.1, 1],
      registry,
    });
    let families = parsePrometheusText(await registry.metrics());
    assert.equal(findSamples(families, 'pushline_test_stage_seconds_count').length, 4);
    assert.equal(findSamples(families, 'pushline_test_stage_seconds_bucket').length, 4 * 3);
    assert.equal(sumSamples(families, 'pushline_test_stage_seconds_count'), 0);
    h.observe({ source: 'async', outcome: 'delivered' }, 0.5);
    families = parsePrometheusText(await registry.metrics());
    assert.equal(sumSamples(families, 'pushline_test_stage_seconds_count', { source: 'async' }), 1);
    assert.equal(findSamples(families, 'pushline_test_stage_seconds_count').length, 4);
  });
});

describe('publishToAckHistogram', () => {
  it('is one family per registry, shared by every component that records into it', async () => {
    const registry = createMetricsRegistry({}, false);
    const a = publishToAckHistogram(registry);
    const b = publishToAckHistogram(registry);
    assert.equal(a, b);
    a.observe({ source: 'async' }, 0.01);
    b.observe({ source: 'offline' }, 90);
    const families = parsePrometheusText(await registry.metrics());
    const count = (source: string) =>
      sumSamples(families, 'pushline_publish_to_ack_seconds_count', { source });
    assert.deepEqual(PUBLISH_TO_ACK_SOURCES.map(count), [1, 1]);
    // A 90 s wait (an outage, a device offline) lands in its own bucket, not in the 30 s top one.
    const bucket = (le: string) =>
      sumSamples(families, 'pushline_publish_to_ack_seconds_bucket', { source: 'offline', le });
    assert.equal(bucket('60'), 0);
    assert.equal(bucket('120'), 1);
  });

  it('reaches the longest ttl the platform accepts (30 days)', () => {
    assert.equal(END_TO_END_BUCKETS_S.at(-1), 2_592_000);
    assert.ok(END_TO_END_BUCKETS_S.every((b, i) => i === 0 || b > (END_TO_END_BUCKETS_S[i - 1] ?? 0)));
  });
});

describe('parsePrometheusText', () => {
  const ok = [
    '# HELP a_total A.',
    '# TYPE a_total counter',
    'a_total{x="1"} 1',
    'a_total{x="2"} 2.5e3 1700000000000',
    '# a plain comment',
    '# TYPE h histogram',
    'h_bucket{le="1"} 1',
    'h_bucket{le="+Inf"} 2',
    'h_sum 3',
    'h_count 2',
    'untyped_thing NaN',
    '',
  ].join('\n');

  it('reads types, labels, values and timestamps', () => {
    const families = parsePrometheusText(ok);
    assert.deepEqual(
      families.map((f) => [f.name, f.type, f.samples.length]),
      [
        ['a_total', 'counter', 2],
        ['h', 'histogram', 4],
        ['untyped_thing', 'untyped', 1],
      ],
    );
    assert.equal(findSamples(families, 'a_total', { x: '2' })[0]?.timestampMs, 1700000000000);
    assert.equal(sumSamples(families, 'a_total'), 2501);
  });

  const bad: [string, string][] = [
    ['no trailing newline', 'a 1'],
    ['bad metric name', '1abc 1\n'],
    ['bad value', 'a one\n'],
    ['unterminated label', 'a{x="1} 1\n'],
    ['bad escape', 'a{x="\\t"} 1\n'],
    ['duplicate series', 'a{x="1"} 1\na{x="1"} 2\n'],
    ['duplicate label', 'a{x="1",x="2"} 1\n'],
    ['split family', 'a 1\nb 1\na{x="1"} 1\n'],
    ['TYPE after samples', 'a 1\n# TYPE a counter\n'],
    ['second TYPE', '# TYPE a counter\n# TYPE a gauge\n'],
    ['unknown type', '# TYPE a thing\n'],
    ['negative counter', '# TYPE a counter\na -1\n'],
    ['bucket without le', '# TYPE h histogram\nh_bucket 1\nh_sum 1\nh_count 1\n'],
    [
      'non-cumulative buckets',
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    ],
    ['+Inf != count', '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n'],
    ['no +Inf bucket', '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n'],
  ];
  for (const [what, text] of bad) {
    it(`rejects: ${what}`, () => {
      assert.throws(() => parsePrometheusText(text), PromParseError);
    });
  }
});
