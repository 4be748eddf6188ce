import { row, type Chart, type Row } from '../report/model.ts';
import { perSecond, summarize, type LatencySummary } from '../stats.ts';
import { measureCpu, perMessage, type PerMessageCost } from '../targets/memory.ts';
import { withTargetFleets } from './common.ts';
import type { Scenario, ScenarioContext, ScenarioOutput } from './types.ts';

interface RateResult {
  readonly offered: number;
  readonly achieved: number;
  readonly latency: LatencySummary;
  readonly outcomes: Record<string, number>;
  /** Server-side CPU and write syscalls per message sent, all target processes and by process. */
  readonly cost: PerMessageCost;
  /** Event-loop delay of the servers during the phase, ms. */
  readonly eventLoopDelay: Record<string, { maxMs: number; p99Ms: number }>;
  /** Round trips over 20 ms by second of the phase. */
  readonly slowBySecond: number[];
}

function plan(smoke: boolean) {
  return smoke ? { rates: [50], durationMs: 1000 } : { rates: [100, 1000], durationMs: 10_000 };
}

/**
 * Scenario 5: device A sends to device B over its socket; the round trip ends when A gets the ack
 * carrying B's outcome. Pairs share a user (the default policy). With two servers, Pushline's
 * pairs sit on different servers, so every message crosses servers.
 */
export const deviceToDevice: Scenario = {
  id: 5,
  name: 'd2d',
  title: 'Device-to-device round trip',
  timeoutMs: (o) => {
    const p = plan(o.smoke);
    return 120_000 + 2 * p.rates.length * (p.durationMs + 20_000);
  },
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const { rates, durationMs } = plan(ctx.options.smoke);
    // 2k devices make 1k senders: 1 msg/s each at the moderate rate, well under the per-device limit.
    const devices = Math.max(2, Math.min(ctx.options.devices, 2000) & ~1);
    const results: Record<string, RateResult[]> = {};
    await withTargetFleets(ctx, 'd2d', devices, async (fleets) => {
      for (const { target, fleet } of fleets) await fleet.connect({ urls: target.deviceUrls });
      // Rate by rate, targets back to back, so compared numbers share the machine's noise.
      for (const rate of rates) {
        for (const { target, fleet } of fleets) {
          await target.eventLoopDelay();
          const { value: r, cost } = await measureCpu(target.processes(), () =>
            fleet.d2d({ ratePerS: rate, durationMs, timeoutMs: 5000, senders: devices / 2 }),
          );
          const loop = await target.eventLoopDelay();
          const result: RateResult = {
            offered: rate,
            achieved: perSecond(r.outcomes['delivered'] ?? 0, durationMs),
            latency: summarize(r.latencies),
            outcomes: r.outcomes,
            cost: perMessage(cost, r.sent),
            eventLoopDelay: loop,
            slowBySecond: r.slowBySecond,
          };
          ctx.log(
            `d2d ${target.name} ${rate}/s: p50 ${result.latency.p50} p99 ${result.latency.p99} cpu ${result.cost.cpuUs} µs/msg, ${result.cost.writes} writes/msg, loop delay ${JSON.stringify(loop)} slow/s ${r.slowBySecond.join(',')} ${JSON.stringify(r.outcomes)}`,
          );
          (results[target.name] ??= []).push(result);
        }
      }
    });
    const rows: Row[] = [];
    const bars: Chart['bars'] = [];
    for (const rate of rates) {
      const b = results['baseline']?.find((r) => r.offered === rate);
      const p = results['pushline']?.find((r) => r.offered === rate);
      rows.push(
        row(
          `d2d.r${rate}.achieved`,
          `${rate}/s offered: delivered/s`,
          'msg/s',
          { baseline: b?.achieved, pushline: p?.achieved },
          'higher',
        ),
        row(
          `d2d.r${rate}.p50`,
          `${rate}/s: p50 round trip`,
          'ms',
          { baseline: b?.latency.p50, pushline: p?.latency.p50 },
          'lower',
        ),
        row(
          `d2d.r${rate}.p95`,
          `${rate}/s: p95 round trip`,
          'ms',
          { baseline: b?.latency.p95, pushline: p?.latency.p95 },
          'lower',
        ),
        row(
          `d2d.r${rate}.p99`,
          `${rate}/s: p99 round trip`,
          'ms',
          { baseline: b?.latency.p99, pushline: p?.latency.p99 },
          'lower',
        ),
        row(
          `d2d.r${rate}.cpu`,
          `${rate}/s: server CPU per message (all processes)`,
          'µs',
          { baseline: b?.cost.cpuUs, pushline: p?.cost.cpuUs },
          'lower',
        ),
        row(
          `d2d.r${rate}.cpu_jit`,
          `${rate}/s: of it, the Kafka broker compiling its own code (JIT)`,
          'µs',
          { pushline: p?.cost.jitUs },
          'lower',
        ),
        row(
          `d2d.r${rate}.writes`,
          `${rate}/s: server write syscalls per message`,
          'writes',
          { baseline: b?.cost.writes, pushline: p?.cost.writes },
          'lower',
        ),
      );
      for (const [name, r] of [
        ['baseline', b],
        ['pushline', p],
      ] as const) {
        if (!r) continue;
        for (const q of ['p50', 'p95', 'p99'] as const)
          bars.push({ group: `${rate}/s ${q}`, series: name, value: r.latency[q] });
      }
    }
    return {
      rows,
      charts: [{ title: 'Device-to-device round trip', unit: 'ms', kind: 'latency', bars }],
      notes: [
        `${devices} devices in ${devices / 2} same-user pairs; each rate runs ${durationMs / 1000} s, open loop (sends are paced, not waiting for acks).`,
        'Round trip = sender emits `send` → the target device acks the `message` → the sender gets the ack with outcome `delivered`.',
        'Baseline: both devices on its single process. Pushline: sender and target on different connection servers (the cross-server path).',
      ],
      details: results,
    };
  },
};
