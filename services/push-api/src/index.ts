export { createPushApi } from './server.ts';
export type { PushApi, PushApiDeps } from './server.ts';
export type { OfflineMessageStore, OutgoingMessage, PushRouter, RoutedResult } from './ports.ts';
export { PROBLEMS, ProblemError, problemType } from './problem.ts';
export { PROBLEM_TYPE_BASE, Problem } from '@pushline/protocol';
export type { ProblemCode } from './problem.ts';
export { DIRECT_PUSH_STATUS } from './routes/push.ts';
export { OPENAPI_PATH, openApiPath, buildOpenApiDocument } from './openapi.ts';
export type { RouteSpec } from './routing.ts';
export { apiKeyId } from './auth.ts';
export {
  IDEMPOTENCY_SCRIPTS,
  IdempotencyStore,
  idempotencyRedisKey,
  idempotentMessageId,
} from './idempotency.ts';
export { IDEMPOTENCY_HEADER, REPLAYED_HEADER } from './routes/publish.ts';
export { cachedReadiness, probeReadiness } from './routes/health.ts';
export type { Readiness, DependencyCheck } from './routes/health.ts';
export { assemblePushApi, pushApiInstanceId } from './assemble.ts';
export type { AssemblePushApiOptions, AssembledPushApi } from './assemble.ts';
