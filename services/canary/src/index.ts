export { assembleCanary, canaryInstanceId } from './assemble.ts';
export type { AssembleCanaryOptions, AssembledCanary } from './assemble.ts';
export { Canary } from './canary.ts';
export type { CanaryOptions, CanaryServerStatus } from './canary.ts';
export { CanaryDevice } from './canary-device.ts';
export type { CanaryDeviceOptions, CanaryPayload } from './canary-device.ts';
export { CanaryMetrics, CANARY_LOOPS, PROBE_PATHS, PROBE_RESULTS } from './metrics.ts';
export type { CanaryLoop, ProbePath, ProbeResult } from './metrics.ts';
