export { assembleCanary, canaryInstanceId } from './assemble.ts';
export type { AssembleCanaryOptions, AssembledCanary } from './assemble.ts';
export { Canary } from './canary.ts';
export { CanaryMetrics } from './metrics.ts';
