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

  const ratioOf = (key: string) => get(key)?.ratio ?? null;
  const judge = (value: number | null | undefined, ok: (v: number) => boolean) =>
    value == null ? null : ok(value);

  const connectCpu = get('capacity.cpu_per_connect');
  checks.push({
    goal: 'connect: server CPU per connect (all processes) ≤ 1.2× baseline',
    measured:
      connectCpu?.ratio == null
        ? 'not measured'
        : `${connectCpu.pushline} vs ${connectCpu.baseline} µs (${connectCpu.ratio}×)`,
    pass: judge(connectCpu?.ratio, (r) => r <= 1.2),
  });

  const direct = [...rows.values()].filter((r) => /^direct\.c\d+\.throughput$/.test(r.key));
  const peak = (side: 'baseline' | 'pushline') => Math.max(0, ...direct.map((r) => r[side] ?? 0));
  const directRatio =
    direct.length > 0 && peak('baseline') > 0
      ? Math.round((peak('pushline') / peak('baseline')) * 100) / 100
      : null;
  checks.push({
    goal: 'direct push peak throughput ≥ 1.2× baseline emit-with-ack (peak over concurrency levels)',
    measured:
      directRatio === null
        ? 'not measured'
        : `${peak('pushline')} vs ${peak('baseline')} msg/s (${directRatio}×)`,
    pass: judge(directRatio, (r) => r >= 1.2),
  });
  const directCpu = [...rows.values()].filter((r) => /^direct\.c\d+\.cpu$/.test(r.key) && r.ratio != null);
  const worstCpu = directCpu.length > 0 ? Math.max(...directCpu.map((r) => r.ratio as number)) : null;
  checks.push({
    goal: 'direct push server CPU per delivered push (all processes) ≤ 1.0× baseline, at every concurrency',
    measured:
      worstCpu === null
        ? 'not measured'
        : directCpu
            .map((r) => `${r.metric.split(' ')[0]} ${r.pushline} vs ${r.baseline} µs (${r.ratio}×)`)
            .join('; '),
    pass: judge(worstCpu, (r) => r <= 1.0),
  });
  const p99c100 = get('direct.c100.p99');
  checks.push({
    goal: 'direct push p99 ≤ 1.2× baseline at c=100',
    measured:
      p99c100?.ratio == null
        ? 'not measured'
        : `${p99c100.pushline} vs ${p99c100.baseline} ms (${p99c100.ratio}×)`,
    pass: judge(ratioOf('direct.c100.p99'), (r) => r <= 1.2),
  });

  const d2dP50 = get('d2d.r1000.p50')?.pushline;
  const d2dP99 = get('d2d.r1000.p99');
  const d2dCpu = get('d2d.r1000.cpu');
  checks.push({
    goal: 'device-to-device across two servers at 1k msg/s: p50 ≤ 1 ms, p99 ≤ 4 ms, CPU per message ≤ 1.5× baseline',
    measured:
      d2dP99?.pushline == null
        ? 'not measured'
        : `p50 ${d2dP50 ?? '—'} ms, p99 ${d2dP99.pushline} ms (baseline p99 ${d2dP99.baseline ?? '—'} ms); CPU ${d2dCpu?.pushline ?? '—'} vs ${d2dCpu?.baseline ?? '—'} µs (${d2dCpu?.ratio ?? '—'}×)`,
    pass:
      d2dP99?.pushline == null || d2dP50 == null || d2dCpu?.ratio == null
        ? null
        : d2dP50 <= 1 && d2dP99.pushline <= 4 && d2dCpu.ratio <= 1.5,
  });

  const asyncMax = get('async.max_deliveries_per_s')?.pushline;
  const asyncP99 = get('async.half_p99')?.pushline;
  const asyncCpu = get('async.max_cpu')?.pushline;
  checks.push({
    goal: 'async path ≥ 15k msg/s delivered and acked, p99 ≤ 50 ms at half of max, platform CPU per delivery ≤ 100 µs',
    measured:
      asyncMax == null
        ? 'not measured'
        : `${asyncMax} msg/s max; p99 ${asyncP99 ?? '—'} ms at ${get('async.half_rate')?.pushline ?? '—'} msg/s; ${asyncCpu ?? '—'} µs per delivery`,
    pass:
      asyncMax == null || asyncP99 == null || asyncCpu == null
        ? null
        : asyncMax >= 15_000 && asyncP99 <= 50 && asyncCpu <= 100,
  });

  const fanoutCpu = get('fanout.cpu');
  checks.push({
    goal: 'fan-out: server CPU per delivery ≤ 1.2× baseline',
    measured:
      fanoutCpu?.ratio == null
        ? 'not measured'
        : `${fanoutCpu.pushline} vs ${fanoutCpu.baseline} µs (${fanoutCpu.ratio}×)`,
    pass: judge(fanoutCpu?.ratio, (r) => r <= 1.2),
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
