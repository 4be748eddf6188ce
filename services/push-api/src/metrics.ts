import { Counter, Histogram, LATENCY_BUCKETS_S, stageCounter, type Registry } from '@pushline/telemetry';

/** One operation of the API and every status it declares (its OpenAPI responses). */
export interface ApiOperation {
  readonly route: string;
  /** Upper case, as express reports it. */
  readonly method: string;
  readonly statuses: readonly number[];
}

/** Outcomes of a direct push (`DIRECT_PUSH_STATUS` of the push routes). */
const DIRECT_PUSH_OUTCOMES = ['delivered', 'not_connected', 'rejected', 'timeout'] as const;

/** The API's metrics, registered on the instance's own registry. Labels stay low-cardinality. */
export class ApiMetrics {
  readonly requests: Counter<'route' | 'method' | 'status'>;
  readonly requestSeconds: Histogram<'route' | 'method'>;
  readonly pushOutcomes: Counter<'outcome'>;
  readonly pushToAckSeconds: Histogram;
  readonly published: Counter;
  readonly publishUnknown: Counter<'cause'>;
  readonly rateLimited: Counter;
  readonly idempotentReplays: Counter;
  readonly storeFailures: Counter;
  /** Label children of the request series, resolved once per (route, method, status). */
  readonly #requestSeries = new Map<
    string,
    {
      count: Counter.Internal;
      seconds: Histogram.Internal<'route' | 'method'>;
    }
  >();

  constructor(registry: Registry) {
    this.requests = new Counter({
      name: 'pushline_api_requests_total',
      help: 'HTTP requests answered, by route template, method and status.',
      labelNames: ['route', 'method', 'status'],
      registers: [registry],
    });
    this.requestSeconds = new Histogram({
      name: 'pushline_api_request_seconds',
      help: 'Time to answer an HTTP request, by route template.',
      labelNames: ['route', 'method'],
      buckets: LATENCY_BUCKETS_S,
      registers: [registry],
    });
    this.pushOutcomes = stageCounter({
      name: 'pushline_api_push_outcomes_total',
      help: 'Per-device live outcomes of direct pushes (device and user routes), as routed; a push then stored counts under the outcome it followed (and in pushline_offline_stored_total).',
      labels: { outcome: DIRECT_PUSH_OUTCOMES },
      registry,
    });
    this.pushToAckSeconds = new Histogram({
      name: 'pushline_api_push_to_ack_seconds',
      help: 'Emit-to-ack latency of delivered direct pushes, as reported by the connection server.',
      buckets: LATENCY_BUCKETS_S,
      registers: [registry],
    });
    this.published = new Counter({
      name: 'pushline_api_published_total',
      help: 'Push requests produced to Kafka by POST /v1/publish (acknowledged by all in-sync replicas).',
      registers: [registry],
    });
    this.publishUnknown = stageCounter({
      name: 'pushline_api_publish_unknown_total',
      help: 'POST /v1/publish answered 503 because Kafka did not acknowledge in time (deadline) or the send failed (failed); the messages may or may not be queued.',
      labels: { cause: ['deadline', 'failed'] },
      registry,
    });
    this.rateLimited = new Counter({
      name: 'pushline_api_rate_limited_total',
      help: 'Requests refused with 429 by the per-key rate limit.',
      registers: [registry],
    });
    this.idempotentReplays = new Counter({
      name: 'pushline_api_idempotent_replays_total',
      help: 'Publish requests answered from the idempotency store without producing again.',
      registers: [registry],
    });
    this.storeFailures = new Counter({
      name: 'pushline_api_offline_store_failures_total',
      help: 'Direct pushes with ttlSeconds whose store-and-forward write failed.',
      registers: [registry],
    });
  }

  /**
   * Counts one answered request. The label children are looked up once per route, method and
   * status (a bounded set: route templates, HTTP methods, statuses) instead of hashing the labels
   * on every request.
   */
  recordRequest(route: string, method: string, status: number, seconds: number): void {
    const key = `${route} ${method} ${status}`;
    let series = this.#requestSeries.get(key);
    if (!series) {
      series = {
        count: this.requests.labels({ route, method, status: String(status) }),
        seconds: this.requestSeconds.labels({ route, method }),
      };
      this.#requestSeries.set(key, series);
    }
    series.count.inc();
    series.seconds.observe(seconds);
  }

  /**
   * Creates the request series of every operation at 0: each (route, method, status) it declares,
   * and its latency histogram, so the first 5xx or 429 of a route moves `rate()` and an idle route
   * reads 0 instead of "No data". Requests no route matched (`unmatched`) appear on first use.
   */
  initOperations(operations: readonly ApiOperation[]): void {
    for (const op of operations) {
      this.requestSeconds.zero({ route: op.route, method: op.method });
      for (const status of op.statuses)
        this.requests.inc({ route: op.route, method: op.method, status: String(status) }, 0);
    }
  }
}
