import { GeneratorProcess } from '../load/ipc.ts';
import { HttpLoadResult, type HttpLoadArgs } from '../load/http-protocol.ts';
import { row, type Chart, type Row } from '../report/model.ts';
import { perSecond, summarize, type LatencySummary } from '../stats.ts';
import { measureCpu, perMessage, type PerMessageCost } from '../targets/memory.ts';
import type { HttpPushSpec, Target } from '../targets/types.ts';
import { withTargetFleets } from './common.ts';
import type { Scenario, ScenarioContext, ScenarioOutput } from './types.ts';

const HTTP_LOAD_SCRIPT = new URL('../load/http-load.ts', import.meta.url);

interface LevelResult {
  readonly label: string;
  readonly concurrency: number;
  readonly throughput: number;
  readonly latency: LatencySummary;
  readonly outcomes: Record<string, number>;
  /** Server-side CPU and write syscalls per request, all target processes and by process. */
  readonly cost: PerMessageCost;
  /** Event-loop delay of the device-holding servers during the level, ms. */
  readonly eventLoopDelay: Record<string, { maxMs: number; p99Ms: number }>;
}

function plan(smoke: boolean) {
  return smoke
    ? { levels: [4], durationMs: 1000, warmupMs: 300 }
    : { levels: [10, 100, 200], durationMs: 8000, warmupMs: 1000 };
}

/** Scenario 2: HTTP push with synchronous delivery feedback, closed loop at fixed concurrency. */
export const directPush: Scenario = {
  id: 2,
  name: 'direct-push',
  title: 'Direct push over HTTP with delivery feedback',
  timeoutMs: (o) => {
    const p = plan(o.smoke);
    return 120_000 + 3 * p.levels.length * (p.durationMs + p.warmupMs + 15_000);
  },
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const { levels, durationMs, warmupMs } = plan(ctx.options.smoke);
    const devices = Math.min(ctx.options.devices, 1000);
    const results: Record<string, LevelResult[]> = {};
    await withTargetFleets(ctx, 'push', devices, async (fleets) => {
      const generators: GeneratorProcess[] = [];
      try {
        for (const { target, fleet } of fleets) {
          // Pinned to the first server: the connection-server route delivers only locally.
          const connect = await fleet.connect({ urls: target.deviceUrls, pin: 0 });
          if (connect.failed > 0)
            ctx.log(`direct push ${target.name}: ${connect.failed} devices failed to connect`);
        }
        const generator = new GeneratorProcess('push-http', HTTP_LOAD_SCRIPT);
        generators.push(generator);
        // Level by level, every route back to back, so compared numbers share the machine's noise.
        for (const concurrency of levels) {
          for (const { target, ids } of fleets) {
            for (const spec of target.directPush) {
              const r = await runLevel(generator, target, spec, ids, concurrency, durationMs, warmupMs);
              ctx.log(
                `direct push ${spec.label} c=${concurrency}: ${r.throughput}/s p50 ${r.latency.p50} p99 ${r.latency.p99} ${JSON.stringify(r.outcomes)}`,
              );
              (results[spec.label] ??= []).push(r);
            }
          }
        }
      } finally {
        await Promise.all(generators.map((g) => g.close()));
      }
    });
    return render(ctx, results, levels, devices);
  },
};

async function runLevel(
  generator: GeneratorProcess,
  target: Target,
  spec: HttpPushSpec,
  ids: string[],
  concurrency: number,
  durationMs: number,
  warmupMs: number,
): Promise<LevelResult> {
  const args: HttpLoadArgs = {
    baseUrl: spec.baseUrl,
    pathTemplate: spec.pathTemplate,
    headers: spec.headers,
    bodyTemplate: spec.bodyTemplate,
    deviceIds: ids,
    concurrency,
    durationMs,
    warmupMs,
    timeoutMs: 10_000,
  };
  await target.eventLoopDelay();
  const { value: r, cost } = await measureCpu(target.processes(), () =>
    generator.request('run', args, HttpLoadResult, durationMs + warmupMs + 30_000),
  );
  const eventLoopDelay = await target.eventLoopDelay();
  return {
    // CPU is sampled over the whole run including warm-up, so it is divided by every request made.
    cost: perMessage(cost, r.total),
    eventLoopDelay,
    label: spec.label,
    concurrency,
    throughput: perSecond(r.outcomes['delivered'] ?? 0, r.ms),
    latency: summarize(r.latencies),
    outcomes: r.outcomes,
  };
}

function headline(target: Target | undefined): string | undefined {
  return target?.directPush[0]?.label;
}

function render(
  ctx: ScenarioContext,
  results: Record<string, LevelResult[]>,
  levels: number[],
  devices: number,
): ScenarioOutput {
  const baseLabel = headline(ctx.baseline);
  const pushLabel = headline(ctx.pushline);
  const at = (label: string | undefined, c: number) =>
    label === undefined ? undefined : results[label]?.find((r) => r.concurrency === c);
  const rows: Row[] = [];
  const throughputBars: Chart['bars'] = [];
  const latencyBars: Chart['bars'] = [];
  for (const c of levels) {
    const b = at(baseLabel, c);
    const p = at(pushLabel, c);
    rows.push(
      row(
        `direct.c${c}.throughput`,
        `c=${c} delivered/s`,
        'msg/s',
        { baseline: b?.throughput, pushline: p?.throughput },
        'higher',
      ),
      row(
        `direct.c${c}.p50`,
        `c=${c} p50`,
        'ms',
        { baseline: b?.latency.p50, pushline: p?.latency.p50 },
        'lower',
      ),
      row(
        `direct.c${c}.p95`,
        `c=${c} p95`,
        'ms',
        { baseline: b?.latency.p95, pushline: p?.latency.p95 },
        'lower',
      ),
      row(
        `direct.c${c}.p99`,
        `c=${c} p99`,
        'ms',
        { baseline: b?.latency.p99, pushline: p?.latency.p99 },
        'lower',
      ),
      row(
        `direct.c${c}.cpu`,
        `c=${c} server CPU per message (all processes)`,
        'µs',
        { baseline: b?.cost.cpuUs, pushline: p?.cost.cpuUs },
        'lower',
      ),
      row(
        `direct.c${c}.cpu_jit`,
        `c=${c} of it, the Kafka broker compiling its own code (JIT)`,
        'µs',
        { pushline: p?.cost.jitUs },
        'lower',
      ),
      row(
        `direct.c${c}.writes`,
        `c=${c} server write syscalls per message`,
        'writes',
        { baseline: b?.cost.writes, pushline: p?.cost.writes },
        'lower',
      ),
    );
  }
  // Every route at every level, so the hop costs show up side by side.
  for (const [label, perLevel] of Object.entries(results)) {
    for (const r of perLevel) {
      throughputBars.push({ group: `c=${r.concurrency}`, series: label, value: r.throughput });
      if (r.concurrency === Math.max(...levels)) {
        for (const q of ['p50', 'p95', 'p99'] as const)
          latencyBars.push({ group: q, series: label, value: r.latency[q] });
      }
    }
  }
  const hop = Object.entries(results).filter(([label]) => label !== baseLabel && label !== pushLabel);
  for (const [label, perLevel] of hop) {
    for (const r of perLevel) {
      rows.push(
        row(
          `direct.internal.c${r.concurrency}.throughput`,
          `c=${r.concurrency} delivered/s, ${label}`,
          'msg/s',
          { baseline: at(baseLabel, r.concurrency)?.throughput, pushline: r.throughput },
          'higher',
        ),
        row(
          `direct.internal.c${r.concurrency}.p99`,
          `c=${r.concurrency} p99, ${label}`,
          'ms',
          { baseline: at(baseLabel, r.concurrency)?.latency.p99, pushline: r.latency.p99 },
          'lower',
        ),
        row(
          `direct.internal.c${r.concurrency}.cpu`,
          `c=${r.concurrency} server CPU per message, ${label}`,
          'µs',
          { baseline: at(baseLabel, r.concurrency)?.cost.cpuUs, pushline: r.cost.cpuUs },
          'lower',
        ),
      );
    }
  }
  return {
    rows,
    charts: [
      {
        title: 'Direct push throughput (delivered/s)',
        unit: 'msg/s',
        kind: 'throughput',
        bars: throughputBars,
      },
      {
        title: `Direct push latency at c=${Math.max(...levels)}`,
        unit: 'ms',
        kind: 'latency',
        bars: latencyBars,
      },
    ],
    notes: [
      `${devices} connected devices on one server, pushed round-robin by ${levels.join('/')} concurrent HTTP clients (keep-alive) in a separate process.`,
      `Baseline: ${baseLabel ?? 'not run'}. Pushline headline: ${pushLabel ?? 'not run'} (registry lookup with cache, then a deliver call over the internal channel to the connection server).`,
      'Latency is request start → response with the device ack, for delivered messages only; every other outcome is listed in details.',
    ],
    details: Object.fromEntries(
      Object.entries(results).map(([label, perLevel]) => [
        label,
        perLevel.map((r) => ({
          concurrency: r.concurrency,
          outcomes: r.outcomes,
          latency: r.latency,
          cost: r.cost,
          eventLoopDelay: r.eventLoopDelay,
        })),
      ]),
    ),
  };
}
