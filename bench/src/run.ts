import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { runCleanup } from '@pushline/runtime';
import { ALL_SCENARIOS, type BenchOptions } from './options.ts';
import { BenchResult, type ScenarioResult } from './report/model.ts';
import { evaluateTargets } from './report/targets.ts';
import { writeResults, type WrittenFiles } from './report/write.ts';
import { asyncPath } from './scenarios/async-path.ts';
import { asyncSilent } from './scenarios/async-silent.ts';
import { capacity } from './scenarios/capacity.ts';
import { capacityInputs } from './scenarios/capacity-inputs.ts';
import { deviceToDevice } from './scenarios/d2d.ts';
import { directPush } from './scenarios/direct-push.ts';
import { fanout } from './scenarios/fanout.ts';
import { reconnectStorm } from './scenarios/reconnect-storm.ts';
import { redisRestart } from './scenarios/redis-restart.ts';
import { ScenarioSkipped, type Scenario, type ScenarioContext } from './scenarios/types.ts';
import { startBaselineTarget } from './targets/baseline.ts';
import { serviceAvailable, startPushlineTarget, type PushlineTarget } from './targets/pushline.ts';
import type { Target } from './targets/types.ts';
import { DeviceTokenSigner } from './tokens.ts';

/**
 * Run order: the storm kills a server, so it goes last; the async path after the side-by-side ones;
 * the Redis restart runs on servers and a Redis of its own.
 */
const SCENARIOS: readonly Scenario[] = [
  capacity,
  directPush,
  deviceToDevice,
  fanout,
  asyncPath,
  asyncSilent,
  redisRestart,
  capacityInputs,
  reconnectStorm,
];
const BASELINE_SCENARIOS = new Set([1, 2, 4, 5]);

export interface BenchRun {
  readonly result: BenchResult;
  readonly files: WrittenFiles;
  readonly logDir: string;
}

export async function runBench(options: BenchOptions, log: (line: string) => void): Promise<BenchRun> {
  const startedAt = new Date();
  const runId = `${startedAt.toISOString().replace(/[:.]/g, '-')}-${randomBytes(2).toString('hex')}`;
  const logDir = join(options.outDir, 'tmp', runId);
  mkdirSync(logDir, { recursive: true });
  log(`logs in ${logDir}`);

  const jwtSecret = randomBytes(32).toString('hex');
  const selected = SCENARIOS.filter((s) => options.scenarios.includes(s.id));
  let baseline: Target | undefined;
  let pushline: PushlineTarget | undefined;
  let pushlineUnavailable: string | undefined;
  const results: ScenarioResult[] = [];
  const heapDir = options.heapSnapshot ? { heapSnapshotDir: join(logDir, 'heap') } : {};
  if (heapDir.heapSnapshotDir) mkdirSync(heapDir.heapSnapshotDir, { recursive: true });
  try {
    if (selected.some((s) => BASELINE_SCENARIOS.has(s.id))) {
      baseline = await startBaselineTarget({
        jwtSecret,
        logDir,
        ...(options.profile ? { profileDir: join(logDir, 'profiles') } : {}),
        ...heapDir,
      });
      log(`baseline on ${baseline.deviceUrls.join(' ')}`);
    }
    if (!serviceAvailable('connection-server')) {
      pushlineUnavailable = 'services/connection-server has no main.ts yet';
    } else {
      try {
        pushline = await startPushlineTarget({
          logDir,
          connectionServers: 2,
          jwtSecret,
          log,
          ...(options.profile ? { profileDir: join(logDir, 'profiles') } : {}),
          ...heapDir,
        });
      } catch (err) {
        pushlineUnavailable = `the platform did not start: ${err instanceof Error ? err.message : String(err)}`;
        log(pushlineUnavailable);
      }
    }
    const ctx: ScenarioContext = {
      options,
      baseline,
      pushline,
      pushlineUnavailable,
      signer: new DeviceTokenSigner(jwtSecret),
      log,
    };
    for (const scenario of selected) results.push(await runScenario(scenario, ctx, log));
  } finally {
    await runCleanup([
      { name: 'pushline', run: () => pushline?.close() },
      { name: 'baseline', run: () => baseline?.close() },
    ]).catch((err: unknown) => log(`cleanup: ${String(err)}`));
  }

  const result = BenchResult.parse({
    schemaVersion: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    ...gitState(),
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
      totalMemBytes: totalmem(),
      node: process.versions.node,
      platform: `${process.platform}-${process.arch}`,
    },
    options: {
      scenarios: [...options.scenarios],
      devices: options.devices,
      stormDevices: options.stormDevices,
      smoke: options.smoke,
    },
    scenarios: results,
    targets: evaluateTargets(results),
  });
  const files = await writeResults(options.outDir, result, ALL_SCENARIOS);
  return { result, files, logDir };
}

async function runScenario(
  scenario: Scenario,
  ctx: ScenarioContext,
  log: (line: string) => void,
): Promise<ScenarioResult> {
  const started = performance.now();
  const base = { id: scenario.id, name: scenario.name, title: scenario.title };
  const empty = { rows: [], charts: [], notes: [], details: {} };
  log(`scenario ${scenario.id} (${scenario.name}) starting`);
  const bound = scenario.timeoutMs(ctx.options);
  let timer: NodeJS.Timeout | undefined;
  try {
    const output = await Promise.race([
      scenario.run(ctx),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`did not finish within ${bound} ms`)), bound);
      }),
    ]);
    return { ...base, status: 'ok', durationMs: performance.now() - started, ...output };
  } catch (err) {
    const skipped = err instanceof ScenarioSkipped;
    const reason = err instanceof Error ? err.message : String(err);
    log(`scenario ${scenario.id} ${skipped ? 'skipped' : 'FAILED'}: ${reason}`);
    return {
      ...base,
      status: skipped ? 'skipped' : 'failed',
      reason,
      durationMs: performance.now() - started,
      ...empty,
    };
  } finally {
    clearTimeout(timer);
  }
}

export function gitState(): { commit: string; dirty: boolean } {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      encoding: 'utf8',
    });
    return { commit, dirty: status.trim() !== '' };
  } catch {
    return { commit: 'unknown', dirty: true };
  }
}
