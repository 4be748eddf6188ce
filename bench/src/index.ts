// Public entry of @pushline/bench, for tooling and the CI smoke test; `main.ts` is the CLI.
export { runBench } from './run.ts';
export type { BenchRun } from './run.ts';
export { parseOptions, USAGE, ALL_SCENARIOS } from './options.ts';
export type { BenchOptions } from './options.ts';
export { BenchResult, ScenarioResult, Row, TargetCheck } from './report/model.ts';
export { startBaseline } from '../baseline/src/app.ts';
export { readJitCompileMs, jitCompileDeltaMs, measureCpu, perMessage } from './targets/memory.ts';
export type { ProcessCost, PerMessageCost } from './targets/memory.ts';
// The load generators' devices, for the tests of how they behave against a server.
export { DeviceFleet } from './load/fleet.ts';
export type { BaselineOptions, BaselineServer } from '../baseline/src/app.ts';
// The chaos suite (`npm run chaos`); see docs/delivery-guarantees.md.
export { runChaos } from './chaos/run.ts';
export type { ChaosRun } from './chaos/run.ts';
export { parseChaosOptions, SHORT_SCENARIOS, CHAOS_USAGE } from './chaos/options.ts';
export type { ChaosOptions } from './chaos/options.ts';
export { reconcile, unsettled, stayedRatio, STAYED_MIN_RATIO } from './chaos/reconcile.ts';
export type { ReconcileInput, ReconcileEvent, Tally } from './chaos/reconcile.ts';
export type { SentRequest, RequestKind } from './chaos/traffic.ts';
export { ChaosResult, ChaosScenarioResult, summaryTable } from './chaos/report.ts';
export { SCENARIO_IDS } from './chaos/scenarios.ts';
export type { ScenarioId } from './chaos/scenarios.ts';
