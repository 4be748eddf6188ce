import { REDIS_RESTART_GOAL_PER_SERVER, REDIS_RESTART_GOAL_S } from '../scenarios/redis-restart.ts';
import type { Row, ScenarioResult, TargetCheck } from './model.ts';

/** Evaluates the issue's targets against a run. A target whose numbers are missing is `pass: null`. */
export function evaluateTargets(scenarios: readonly ScenarioResult[], stormGoal = 19_000): TargetCheck[] {
  const rows = new Map<string, Row>();
  for (const s of scenarios) if (s.status === 'ok') for (const r of s.rows) rows.set(r.key, r);
  const get = (key: string) => rows.get(key);
  const checks: TargetCheck[] = [];

  const rss = get('capacity.rss_per_conn');
  const heap = get('capacity.heap_per_conn');
  // Both must hold: RSS is what the machine pays, heap is the part that does not depend on when
  // the allocator hands pages back.
  const memoryPass = rss?.ratio == null || heap?.ratio == null ? null : rss.ratio <= 1.0 && heap.ratio <= 1.0;
  checks.push({
    goal: 'memory per idle connection ≤ 1.0× baseline (RSS and JS heap)',
    measured:
      rss?.ratio == null
        ? 'not measured'
        : `RSS ${rss.pushline} vs ${rss.baseline} KB (${rss.ratio}×); heap ${heap?.pushline ?? '—'} vs ${heap?.baseline ?? '—'} KB (${heap?.ratio ?? '—'}×)`,
    pass: memoryPass,
  });

  const direct = [...rows.values()].filter((r) => /^direct\.c\d+\.throughput$/.test(r.key));
  const peak = (side: 'baseline' | 'pushline') => Math.max(0, ...direct.map((r) => r[side] ?? 0));
  const directRatio =
    direct.length > 0 && peak('baseline') > 0
      ? Math.round((peak('pushline') / peak('baseline')) * 100) / 100
      : null;
  checks.push({
    goal: 'direct push throughput ≥ 1.0× baseline emit-with-ack (peak over concurrency levels)',
    measured:
      directRatio === null
        ? 'not measured'
        : `${peak('pushline')} vs ${peak('baseline')} msg/s (${directRatio}×)`,
    pass: directRatio === null ? null : directRatio >= 1.0,
  });

  const d2d = get('d2d.r1000.p99');
  checks.push({
    goal: 'device-to-device p99 ≤ 4 ms at 1k msg/s',
    measured:
      d2d?.pushline == null
        ? 'not measured'
        : `p99 ${d2d.pushline} ms (p50 ${get('d2d.r1000.p50')?.pushline ?? '—'} ms; baseline p99 ${d2d.baseline ?? '—'} ms)`,
    pass: d2d?.pushline == null ? null : d2d.pushline <= 4,
  });

  const asyncMax = get('async.max_deliveries_per_s')?.pushline;
  const asyncP99 = get('async.half_p99')?.pushline;
  checks.push({
    goal: 'async path ≥ 20k msg/s delivered, p99 ≤ 50 ms at half of max',
    measured:
      asyncMax == null
        ? 'not measured'
        : `${asyncMax} msg/s max; p99 ${asyncP99 ?? '—'} ms at ${get('async.half_rate')?.pushline ?? '—'} msg/s`,
    pass: asyncMax == null || asyncP99 == null ? null : asyncMax >= 20_000 && asyncP99 <= 50,
  });

  const silentP99 = get('async_silent.half_p99')?.pushline;
  const silentLost = get('async_silent.lost')?.pushline;
  checks.push({
    goal: 'async path with 5% of devices never acking: p99 of the acking ones ≤ 50 ms at half of max, none lost',
    measured:
      silentP99 == null
        ? 'not measured'
        : `p99 ${silentP99} ms (p50 ${get('async_silent.half_p50')?.pushline ?? '—'} ms) at ${get('async_silent.half_rate')?.pushline ?? '—'} msg/s; max ${get('async_silent.max_deliveries_per_s')?.pushline ?? '—'} msg/s; ${silentLost ?? '—'} not received`,
    // A phase that received nothing has no latency to judge: only a run without losses passes.
    pass: silentP99 == null ? null : silentP99 <= 50 && silentLost === 0,
  });

  const stormN = get('storm.devices')?.pushline;
  const stormS = get('storm.registered_s')?.pushline;
  const lost = get('storm.lost')?.pushline;
  const atGoal = stormN != null && stormN >= stormGoal;
  checks.push({
    goal: `reconnect storm: ${stormGoal / 1000}k devices re-registered within 10 s, none lost`,
    measured:
      stormN == null
        ? 'not measured'
        : `${stormN} devices: ${stormS == null ? 'not all' : `${stormS} s`}, ${lost ?? '—'} lost${atGoal ? '' : ` (below the ${stormGoal} of the goal, so not judged)`}`,
    pass: stormN == null || !atGoal ? null : stormS != null && stormS <= 10 && lost === 0,
  });
  const restoreN = get('redis_restart.devices')?.pushline;
  const restoredS = get('redis_restart.restored_s')?.pushline;
  const extrapolatedS = get('redis_restart.extrapolated_s')?.pushline;
  const restoreLost = get('redis_restart.lost')?.pushline;
  checks.push({
    goal: `Redis restart without persistence: presence correct again within ${REDIS_RESTART_GOAL_S} s at ${REDIS_RESTART_GOAL_PER_SERVER / 1000}k connections per server`,
    measured:
      restoreN == null
        ? 'not measured'
        : `${restoreN} devices on 2 servers: all back in ${restoredS ?? '—'} s, ${restoreLost ?? '—'} lost; ${extrapolatedS ?? '—'} s extrapolated to ${REDIS_RESTART_GOAL_PER_SERVER / 1000}k per server`,
    pass:
      extrapolatedS == null || restoredS == null
        ? null
        : extrapolatedS <= REDIS_RESTART_GOAL_S && restoredS <= REDIS_RESTART_GOAL_S && restoreLost === 0,
  });
  return checks;
}
