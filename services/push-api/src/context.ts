import type { PushApiConfig, TopicNames } from '@pushline/config';
import type { Producer } from '@pushline/kafka';
import type { DeviceRegistry, RegistryCompleteness } from '@pushline/registry';
import type { Logger, Tracer } from '@pushline/telemetry';
import type { IdempotencyStore } from './idempotency.ts';
import type { ApiMetrics } from './metrics.ts';
import type { OfflineMessageStore, PushRouter } from './ports.ts';
import type { ApiSchemas } from './schemas.ts';

/** What route handlers work with; built once per API instance. */
export interface ApiContext {
  readonly config: PushApiConfig;
  readonly schemas: ApiSchemas;
  readonly topics: TopicNames;
  readonly registry: DeviceRegistry;
  /** Whether the registry's silence can be trusted now (see `PushApiDeps.completeness`). */
  readonly completeness: RegistryCompleteness | undefined;
  readonly router: PushRouter;
  readonly producer: Producer;
  readonly offlineStore: OfflineMessageStore | undefined;
  readonly idempotency: IdempotencyStore;
  readonly metrics: ApiMetrics;
  readonly tracer: Tracer;
  readonly logger: Logger;
}
