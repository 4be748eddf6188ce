export { assembleCanary } from './assemble.ts';
export type { AssembledCanary } from './assemble.ts';
export { Canary } from './canary.ts';
export { CanaryMetrics } from './metrics.ts';
