import { MAX_DEVICES_PER_SERVER } from '../options.ts';
import { row, type Row } from '../report/model.ts';
import { nowMs, perSecond, summarize, type LatencySummary } from '../stats.ts';
import type { Target } from '../targets/types.ts';
import { measureCpu, perMessage, type PerMessageCost } from '../targets/memory.ts';
import { pollUntil, sideBySide, withFleet } from './common.ts';
import type { Scenario, ScenarioContext, ScenarioOutput } from './types.ts';

interface FanoutResult {
  readonly subscribers: number;
  readonly servers: number;
  readonly broadcasts: number;
  readonly expected: number;
  readonly received: number;
  readonly acked: number;
  readonly deliveriesPerS: number;
  readonly deviceLatency: LatencySummary;
  readonly callLatency: LatencySummary;
  /** Server CPU per device delivery, all processes. */
  readonly cost: PerMessageCost;
}

function plan(smoke: boolean) {
  return smoke ? { broadcasts: 2 } : { broadcasts: 10 };
}

/** Scenario 4: one topic, N subscribers (over two Pushline servers), broadcasts one after another. */
export const fanout: Scenario = {
  id: 4,
  name: 'fanout',
  title: 'Fan-out: topic broadcast to every subscriber',
  timeoutMs: (o) => 180_000 + Math.min(o.devices, MAX_DEVICES_PER_SERVER) * 40,
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    // The baseline holds every subscriber in one process, under the open-files limit.
    const n = Math.max(2, Math.min(ctx.options.devices, MAX_DEVICES_PER_SERVER));
    const { broadcasts } = plan(ctx.options.smoke);
    const results: Partial<Record<Target['name'], FanoutResult>> = {};
    for (const target of sideBySide(ctx)) {
      results[target.name] = await withFleet(ctx, `fan-${target.name}`, n, async (fleet) => {
        const connect = await fleet.connect({ urls: target.deviceUrls });
        const topic = `bench.fanout.${target.name}`;
        const sub = await fleet.subscribe(topic);
        if (sub.failed > 0) ctx.log(`fanout ${target.name}: ${sub.failed} subscriptions failed`);
        await fleet.reset();
        const expected = sub.ok * broadcasts;
        const calls: number[] = [];
        let acked = 0;
        const started = nowMs();
        const { value: done, cost } = await measureCpu(target.processes(), async () => {
          for (let i = 0; i < broadcasts; i++) {
            const t = nowMs();
            const answer = await target.broadcast(topic, { t0: t, i });
            calls.push(nowMs() - t);
            acked += answer.delivered;
          }
          // Receipt counting is bounded: the broadcasts have returned, stragglers get a short grace.
          return pollUntil(
            () => fleet.stats(),
            (s) => s.received >= expected,
            10_000,
            100,
          );
        });
        const stats = done.value;
        const result: FanoutResult = {
          subscribers: sub.ok,
          servers: target.deviceUrls.length,
          broadcasts,
          expected,
          received: stats.received,
          acked,
          deliveriesPerS: perSecond(stats.received, Math.max(1, stats.lastReceivedAt - started)),
          deviceLatency: summarize(stats.latencies),
          callLatency: summarize(calls),
          cost: perMessage(cost, stats.received),
        };
        ctx.log(`fanout ${target.name}: ${JSON.stringify({ ...result, connected: connect.connected })}`);
        return result;
      });
    }
    const b = results.baseline;
    const p = results.pushline;
    const rows: Row[] = [
      row(
        'fanout.deliveries_per_s',
        'deliveries/s',
        'msg/s',
        { baseline: b?.deliveriesPerS, pushline: p?.deliveriesPerS },
        'higher',
      ),
      row(
        'fanout.cpu',
        'server CPU per delivery (all processes)',
        'µs',
        { baseline: b?.cost.cpuUs, pushline: p?.cost.cpuUs },
        'lower',
      ),
      row(
        'fanout.cpu_jit',
        'of it, the Kafka broker compiling its own code (JIT)',
        'µs',
        { pushline: p?.cost.jitUs },
        'lower',
      ),
      row(
        'fanout.received_pct',
        'received / expected',
        '%',
        { baseline: b && pctOf(b), pushline: p && pctOf(p) },
        'higher',
      ),
      row(
        'fanout.device_p50',
        'broadcast → device p50',
        'ms',
        { baseline: b?.deviceLatency.p50, pushline: p?.deviceLatency.p50 },
        'lower',
      ),
      row(
        'fanout.device_p99',
        'broadcast → device p99',
        'ms',
        { baseline: b?.deviceLatency.p99, pushline: p?.deviceLatency.p99 },
        'lower',
      ),
      row(
        'fanout.call_p50',
        'broadcast call (all acks) p50',
        'ms',
        { baseline: b?.callLatency.p50, pushline: p?.callLatency.p50 },
        'lower',
      ),
    ];
    return {
      rows,
      charts: [
        {
          title: 'Fan-out deliveries/s',
          unit: 'msg/s',
          kind: 'throughput',
          bars: [
            b && { group: 'fan-out', series: 'baseline', value: b.deliveriesPerS },
            p && { group: 'fan-out', series: 'pushline', value: p.deliveriesPerS },
          ].filter((x): x is { group: string; series: string; value: number } => x !== undefined),
        },
      ],
      notes: [
        `${n} subscribers of one topic, ${broadcasts} broadcasts sent one after another, each waiting for every ack (timeout 10 s).`,
        'Baseline: one process, `io.to(room).timeout().emitWithAck()`. Pushline: subscribers spread over two connection servers; each broadcast is a push-api topic request, whose one broadcast call over the internal channel reaches both servers through the Redis adapter.',
        'deliveries/s = device receipts / (first broadcast sent → last receipt).',
      ],
      details: results,
    };
  },
};

function pctOf(r: FanoutResult): number {
  return r.expected === 0 ? 0 : Math.round((r.received / r.expected) * 10_000) / 100;
}
