import { sumSamples, type PromFamily } from '@pushline/telemetry';

/** One service instance's latest scrape. */
export interface Scrape {
  readonly name: string;
  /** The `service` label its samples carry (connection-server, message-processor, push-api, ...). */
  readonly service: string | undefined;
  readonly families: readonly PromFamily[];
  readonly at: number;
}

/** A counter summed over every instance of a service (or all services). */
interface Selector {
  readonly service?: string;
  readonly metric: string;
  readonly labels?: Readonly<Record<string, string>>;
}

const total = (scrapes: readonly Scrape[], s: Selector): number =>
  scrapes
    .filter((x) => s.service === undefined || x.service === s.service)
    .reduce((sum, x) => sum + sumSamples(x.families, s.metric, s.labels), 0);

const CS = 'connection-server';
const MP = 'message-processor';
const API = 'push-api';

/** The stage counters the console shows, in the order a message meets them. */
const STAGES: readonly (Selector & { readonly label: string })[] = [
  { label: 'API: published to Kafka', service: API, metric: 'pushline_api_published_total' },
  ...['delivered', 'not_connected', 'timeout', 'rejected', 'stored'].map((outcome) => ({
    label: `API: direct push ${outcome}`,
    service: API,
    metric: 'pushline_api_push_outcomes_total',
    labels: { outcome },
  })),
  ...['received', 'processed', 'duplicate', 'dlq', 'failed'].map((result) => ({
    label: `Processor: records ${result}`,
    service: MP,
    metric: 'pushline_processor_records_total',
    labels: { result },
  })),
  ...['delivered', 'not_connected', 'timeout', 'rejected', 'stored', 'expired'].map((outcome) => ({
    label: `Processor: outcome ${outcome}`,
    service: MP,
    metric: 'pushline_processor_outcomes_total',
    labels: { outcome },
  })),
  ...['delivered', 'timeout', 'rejected'].map((outcome) => ({
    label: `Servers: handed to devices, ${outcome}`,
    service: CS,
    metric: 'pushline_server_deliveries_total',
    labels: { outcome },
  })),
  { label: 'Servers: connects', service: CS, metric: 'pushline_connects_total' },
  { label: 'Servers: device-to-device sends', service: CS, metric: 'pushline_d2d_total' },
];

export interface StageRow {
  readonly label: string;
  readonly value: number;
  /** Per second over the last two scrapes; undefined until there are two. */
  readonly ratePerS: number | undefined;
}

export function stageRows(current: readonly Scrape[], previous: readonly Scrape[] | undefined): StageRow[] {
  const dt = previous && current[0] && previous[0] ? (current[0].at - previous[0].at) / 1000 : 0;
  return STAGES.map((s) => {
    const value = total(current, s);
    const before = previous ? total(previous, s) : undefined;
    return {
      label: s.label,
      value,
      ratePerS: before === undefined || dt <= 0 ? undefined : Math.max(0, value - before) / dt,
    };
  });
}

export interface IdentityRow {
  /** The identity's number in docs/observability.md. */
  readonly id: string;
  readonly left: { readonly label: string; readonly value: number };
  readonly right: { readonly label: string; readonly value: number };
  readonly holds: boolean;
}

/**
 * The identities of docs/observability.md ("How the stage counters add up") that the scraped
 * counters can show. They hold up to what is in flight, so a brief gap under load is expected; a
 * gap that stays is a stage losing or double-counting messages.
 */
export function identityRows(scrapes: readonly Scrape[]): IdentityRow[] {
  const v = (service: string | undefined, metric: string, labels?: Record<string, string>) =>
    total(scrapes, { ...(service ? { service } : {}), metric, ...(labels ? { labels } : {}) });
  const rec = (result: string) => v(MP, 'pushline_processor_records_total', { result });
  // Device and user targets only: a topic broadcast is one aggregate event.
  const outcome = (o: string) =>
    v(MP, 'pushline_processor_outcomes_total', { outcome: o, target_type: 'device' }) +
    v(MP, 'pushline_processor_outcomes_total', { outcome: o, target_type: 'user' });
  const rows: IdentityRow[] = [];
  const row = (id: string, left: [string, number], right: [string, number]) =>
    rows.push({
      id,
      left: { label: left[0], value: left[1] },
      right: { label: right[0], value: right[1] },
      holds: left[1] === right[1],
    });

  const hasApi = scrapes.some((s) => s.service === API);
  const hasProcessor = scrapes.some((s) => s.service === MP);
  if (hasApi && hasProcessor) {
    row(
      '1',
      ['api_published_total', v(API, 'pushline_api_published_total')],
      ['processor records{received}', rec('received')],
    );
  }
  if (hasProcessor) {
    row(
      '2',
      ['records{received}', rec('received')],
      [
        'dlq + duplicate + processed + failed',
        rec('dlq') + rec('duplicate') + rec('processed') + rec('failed'),
      ],
    );
    row(
      '2b',
      ['records{dlq}', rec('dlq')],
      ['sum(processor_dlq_total)', v(MP, 'pushline_processor_dlq_total')],
    );
    for (const o of ['delivered', 'rejected', 'timeout']) {
      row(
        `4 (${o})`,
        [`processor outcomes{${o}}`, outcome(o)],
        [
          `servers deliveries{async,${o}}`,
          v(CS, 'pushline_server_deliveries_total', { source: 'async', outcome: o }),
        ],
      );
    }
    row(
      '5',
      [
        'router{async,not_connected}',
        v(MP, 'pushline_router_deliveries_total', { source: 'async', outcome: 'not_connected' }),
      ],
      ['outcomes{not_connected} + outcomes{stored}', outcome('not_connected') + outcome('stored')],
    );
    row(
      '6',
      [
        'publish_to_ack_seconds_count{async}',
        v(MP, 'pushline_publish_to_ack_seconds_count', { source: 'async' }),
      ],
      ['outcomes{delivered}', outcome('delivered')],
    );
  }
  if (hasApi) {
    for (const o of ['delivered', 'rejected', 'timeout']) {
      row(
        `7 (${o})`,
        [`api push outcomes{${o}}`, v(API, 'pushline_api_push_outcomes_total', { outcome: o })],
        [
          `servers deliveries{direct,${o}}`,
          v(CS, 'pushline_server_deliveries_total', { source: 'direct', outcome: o }),
        ],
      );
    }
    row(
      '7b',
      ['api_push_to_ack_seconds_count', v(API, 'pushline_api_push_to_ack_seconds_count')],
      ['api push outcomes{delivered}', v(API, 'pushline_api_push_outcomes_total', { outcome: 'delivered' })],
    );
  }
  for (const o of ['delivered', 'rejected']) {
    row(
      `8 (${o})`,
      [`servers deliveries{${o}}`, v(CS, 'pushline_server_deliveries_total', { outcome: o })],
      [`device_ack_seconds_count{${o}}`, v(CS, 'pushline_device_ack_seconds_count', { outcome: o })],
    );
  }
  return rows;
}
