// Public entry of @pushline/bench, for tooling and the CI smoke test; `main.ts` is the CLI.
export { runBench } from './run.ts';
export type { BenchRun } from './run.ts';
export { parseOptions, USAGE, ALL_SCENARIOS } from './options.ts';
export type { BenchOptions } from './options.ts';
export { BenchResult, ScenarioResult, Row, TargetCheck } from './report/model.ts';
export { startBaseline } from '../baseline/src/app.ts';
export type { BaselineOptions, BaselineServer } from '../baseline/src/app.ts';
