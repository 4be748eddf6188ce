import assert from 'node:assert/strict';
import { test } from 'node:test';
import { identityRows, stageRows, type Scrape } from '@pushline/console';
import { parsePrometheusText } from '@pushline/telemetry';

// Unit tests of the console's pure arithmetic over scrapes; the live view is tested in Chromium.

const scrape = (service: string, text: string, at = 1_000): Scrape => ({
  name: service,
  service,
  families: parsePrometheusText(text),
  at,
});

const api = (published: number, delivered: number, ackCount = delivered) =>
  scrape(
    'push-api',
    `# TYPE pushline_api_published_total counter
pushline_api_published_total{service="push-api"} ${published}
# TYPE pushline_api_push_outcomes_total counter
pushline_api_push_outcomes_total{service="push-api",outcome="delivered"} ${delivered}
# TYPE pushline_api_push_to_ack_seconds_count counter
pushline_api_push_to_ack_seconds_count{service="push-api"} ${ackCount}
`,
  );
const processor = (received: number, processed: number, delivered: number) =>
  scrape(
    'message-processor',
    `# TYPE pushline_processor_records_total counter
pushline_processor_records_total{service="message-processor",result="received"} ${received}
pushline_processor_records_total{service="message-processor",result="processed"} ${processed}
# TYPE pushline_processor_outcomes_total counter
pushline_processor_outcomes_total{service="message-processor",outcome="delivered",target_type="device"} ${delivered}
pushline_processor_outcomes_total{service="message-processor",outcome="delivered",target_type="topic"} 7
# TYPE pushline_publish_to_ack_seconds_count counter
pushline_publish_to_ack_seconds_count{service="message-processor",source="async"} ${delivered}
`,
  );
const server = (name: string, asyncDelivered: number, directDelivered: number) => ({
  ...scrape(
    'connection-server',
    `# TYPE pushline_server_deliveries_total counter
pushline_server_deliveries_total{service="connection-server",source="async",outcome="delivered"} ${asyncDelivered}
pushline_server_deliveries_total{service="connection-server",source="direct",outcome="delivered"} ${directDelivered}
# TYPE pushline_device_ack_seconds_count counter
pushline_device_ack_seconds_count{service="connection-server",outcome="delivered"} ${asyncDelivered + directDelivered}
`,
  ),
  name,
});

const find = (rows: ReturnType<typeof identityRows>, id: string) => {
  const row = rows.find((r) => r.id === id);
  assert.ok(row, `identity ${id} is shown`);
  return row;
};

test('identities hold when the stages add up, summing over every connection server', () => {
  const rows = identityRows([api(5, 3), processor(5, 5, 4), server('cs-1', 1, 2), server('cs-2', 3, 1)]);
  for (const row of rows)
    assert.equal(row.holds, true, `identity ${row.id}: ${row.left.value} vs ${row.right.value}`);
  assert.equal(find(rows, '4 (delivered)').left.value, 4, 'topic broadcasts are not per-device outcomes');
  assert.equal(find(rows, '4 (delivered)').right.value, 4);
  assert.equal(find(rows, '7 (delivered)').right.value, 3);
});

test('a stage that loses messages breaks its identity, with both sides shown', () => {
  const rows = identityRows([api(5, 3), processor(4, 4, 4), server('cs-1', 4, 2)]);
  const one = find(rows, '1');
  assert.equal(one.holds, false);
  assert.deepEqual([one.left.value, one.right.value], [5, 4]);
  assert.equal(find(rows, '7 (delivered)').holds, false, 'the API counted 3 direct deliveries, servers 2');
});

test('identities of a service that was not scraped are left out rather than shown broken', () => {
  const rows = identityRows([server('cs-1', 0, 1)]);
  assert.deepEqual(
    rows.map((r) => r.id),
    ['8 (delivered)', '8 (rejected)'],
  );
});

test('stage rates are per second between two scrapes, and absent after the first', () => {
  const first = [api(10, 0)];
  const second = [{ ...api(16, 0), at: 3_000 }];
  const published = (rows: ReturnType<typeof stageRows>) =>
    rows.find((r) => r.label === 'API: published to Kafka');
  assert.equal(published(stageRows(first, undefined))?.ratePerS, undefined);
  assert.equal(published(stageRows(second, first))?.value, 16);
  assert.equal(published(stageRows(second, first))?.ratePerS, 3);
  // A restarted service resets its counters: no negative rates.
  const afterRestart = [{ ...api(2, 0), at: 5_000 }];
  assert.equal(published(stageRows(afterRestart, second))?.ratePerS, 0);
});
