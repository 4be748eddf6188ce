import type { BenchOptions } from '../options.ts';
import type { Chart, Row } from '../report/model.ts';
import type { PushlineTarget } from '../targets/pushline.ts';
import type { Target } from '../targets/types.ts';
import type { DeviceTokenSigner } from '../tokens.ts';

export interface ScenarioContext {
  readonly options: BenchOptions;
  /** undefined when the baseline is not part of this run. */
  readonly baseline: Target | undefined;
  /** undefined when the platform could not be started; see pushlineUnavailable. */
  readonly pushline: PushlineTarget | undefined;
  readonly pushlineUnavailable: string | undefined;
  /** Signs tokens both targets accept (they share the HS256 secret). */
  readonly signer: DeviceTokenSigner;
  log(line: string): void;
}

export interface ScenarioOutput {
  readonly rows: Row[];
  readonly charts: Chart[];
  readonly notes: string[];
  readonly details: Record<string, unknown>;
}

/** Thrown when a scenario cannot run in this checkout (a service not built yet, too few servers). */
export class ScenarioSkipped extends Error {
  override readonly name = 'ScenarioSkipped';
}

export interface Scenario {
  readonly id: number;
  readonly name: string;
  readonly title: string;
  /** Upper bound on the scenario's wall time; it is failed past it. */
  timeoutMs(options: BenchOptions): number;
  run(ctx: ScenarioContext): Promise<ScenarioOutput>;
}
