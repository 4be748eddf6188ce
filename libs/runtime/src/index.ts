export { runCleanup, closeOnce, backoffMs, CleanupError } from './lifecycle.ts';
export type { Component, CleanupStep } from './lifecycle.ts';
export { OpsServer, sendJson, readBody, BodyTooLargeError } from './ops-server.ts';
export type { OpsServerOptions, ReadinessCheck, ExtraRoute } from './ops-server.ts';
export { runMain } from './main.ts';
export type { RunningService } from './main.ts';
export { assemblyLifecycle } from './assembly.ts';
export type { AssemblyOptions } from './assembly.ts';
