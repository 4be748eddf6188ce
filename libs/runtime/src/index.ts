export {
  runCleanup,
  closeOnce,
  backoffMs,
  activeCleanupSteps,
  cleanupStepTimeoutChannel,
  CleanupError,
  CleanupStepTimeoutError,
  DEFAULT_CLEANUP_STEP_TIMEOUT_MS,
} from './lifecycle.ts';
export type { Component, CleanupStep, RunCleanupOptions } from './lifecycle.ts';
export { OpsServer, sendJson, readBody, BodyTooLargeError } from './ops-server.ts';
export type { OpsServerOptions, ReadinessCheck, ExtraRoute } from './ops-server.ts';
export { runMain, DEFAULT_SHUTDOWN_DEADLINE_MS } from './main.ts';
export type { RunningService } from './main.ts';
export { assemblyLifecycle } from './assembly.ts';
export type { AssemblyOptions } from './assembly.ts';
export { listenForUrl, listeningUrl } from './listen.ts';
export { TokenBucket } from './token-bucket.ts';
export type { TokenBucketOptions } from './token-bucket.ts';
export { MicroBatcher } from './micro-batcher.ts';
export type { MicroBatcherOptions } from './micro-batcher.ts';
