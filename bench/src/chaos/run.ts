import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Admin, Producer } from '@pushline/kafka';
import { runCleanup } from '@pushline/runtime';
import { gitState } from '../run.ts';
import { round, summarize } from '../stats.ts';
import { measureCpu } from '../targets/memory.ts';
import { ChaosFleet } from './devices.ts';
import { Observer } from './observer.ts';
import type { ChaosOptions } from './options.ts';
import { ChaosPlatform, makeLogDir } from './platform.ts';
import { probePlatform } from './probe.ts';
import {
  STAYED_MIN_LABEL,
  STAYED_MIN_RATIO,
  reconcile,
  stayedRatio,
  unsettled,
  type Tally,
} from './reconcile.ts';
import {
  ChaosResult,
  writeChaosResults,
  type ChaosCheck,
  type ChaosScenarioResult,
  type WrittenChaosFiles,
} from './report.ts';
import {
  SCENARIOS,
  SCENARIO_IDS,
  balance,
  type ChaosScenario,
  type Injection,
  type ScenarioContext,
} from './scenarios.ts';
import { Traffic } from './traffic.ts';

/** Device reconnect backoff: full jitter from 0.5 s, capped at 5 s (clients cap at 60 s; a short cap keeps recovery measurable). */
const BACKOFF = { baseMs: 500, capMs: 5000 };
/** Longest the suite waits for the platform to be healthy before it injects the next fault. */
const STEADY_DEADLINE_MS = 60_000;

export interface ChaosRun {
  readonly result: ChaosResult;
  readonly files: WrittenChaosFiles;
}

export async function runChaos(options: ChaosOptions, log: (line: string) => void): Promise<ChaosRun> {
  const startedAt = new Date();
  const logDir = await makeLogDir(options.outDir, options.short ? 'short' : 'full');
  log(`logs in ${logDir}`);
  const platform = new ChaosPlatform({
    logDir,
    externalKafka: options.externalKafka,
    partitions: options.short ? 6 : 12,
    connectionServers: 2,
    drainWindowMs: options.drainWindowMs,
    closeGraceMs: options.closeGraceMs,
    log,
  });
  const results: ChaosScenarioResult[] = [];
  let fleet: ChaosFleet | undefined;
  let observer: Observer | undefined;
  let producer: Producer | undefined;
  let admin: Admin | undefined;
  try {
    await platform.start();
    fleet = new ChaosFleet({
      run: platform.run,
      count: options.sizes.devices,
      servers: platform.servers,
      jwtSecret: platform.jwtSecret,
      backoff: BACKOFF,
    });
    await fleet.connectAll(platform.servers);
    log(`${fleet.connectedCount()}/${fleet.devices.length} devices connected`);
    observer = new Observer(platform.kafka, platform.topics);
    await observer.start();
    producer = platform.kafka.producer();
    await producer.start();
    admin = platform.kafka.admin();
    const ctx: ScenarioContext = { platform, fleet, observer, producer, sizes: options.sizes, log };
    for (const id of options.scenarios) {
      const result = await runScenario(ctx, SCENARIOS[id], admin);
      results.push(result);
      log(
        `scenario ${id}: ${result.status} in ${Math.round(result.durationMs / 1000)} s${result.error ? ` (${result.error})` : ''}`,
      );
    }
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    log(`the run stopped: ${message}`);
    for (const id of options.scenarios.slice(results.length)) {
      results.push(errorResult(SCENARIOS[id], `not run: ${message}`));
    }
  } finally {
    const f = fleet;
    await runCleanup([
      { name: 'devices', run: () => f?.close() },
      { name: 'producer', run: () => producer?.close() },
      { name: 'observer', run: () => observer?.close() },
      { name: 'admin', run: () => admin?.close() },
      { name: 'platform', run: () => platform.close() },
    ]).catch((err: unknown) => log(`cleanup: ${String(err)}`));
  }
  const result = ChaosResult.parse({
    schemaVersion: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    ...gitState(),
    machine: { cpus: cpus().length, node: process.versions.node },
    options: {
      scenarios: [...options.scenarios],
      short: options.short,
      devices: options.sizes.devices,
      ratePerS: options.sizes.ratePerS,
      downMs: options.sizes.downMs,
      redisDownMs: options.sizes.redisDownMs,
      externalKafka: options.externalKafka !== undefined,
    },
    logDir,
    pass: results.length > 0 && results.every((r) => r.status === 'passed'),
    scenarios: results,
  });
  const complete = SCENARIO_IDS.every((id) => options.scenarios.includes(id));
  const files = await writeChaosResults(options.outDir, result, complete);
  return { result, files };
}

function errorResult(scenario: ChaosScenario, error: string): ChaosScenarioResult {
  return {
    id: scenario.id,
    title: scenario.title,
    status: 'error',
    error,
    durationMs: 0,
    downMs: null,
    recoveryMs: null,
    tally: null,
    stayedRatio: null,
    publishAnswerMs: null,
    checks: [],
    notes: [],
    lastProbeProblems: [],
    cpuMsByProcess: {},
  };
}

/**
 * Brings the platform to a healthy state before a fault: services that exited are started again
 * (and named), devices that are not connected connect, and devices whose registry entry is wrong
 * after waiting are reconnected by the suite (and counted), so one scenario's damage does not
 * become the next one's finding.
 */
async function steady(ctx: ScenarioContext, canaries: readonly string[]): Promise<string[]> {
  const notes: string[] = [];
  const restarted = await ctx.platform.ensureRunning();
  if (restarted.length > 0) notes.push(`before the scenario the suite restarted: ${restarted.join('; ')}`);
  const deadline = Date.now() + STEADY_DEADLINE_MS;
  let repaired = false;
  for (;;) {
    const problems = await probePlatform({ ...ctx, canaries });
    if (problems.length === 0) return notes;
    if (Date.now() > deadline)
      throw new Error(`the platform is not healthy before the fault: ${problems.join('; ')}`);
    if (!repaired && Date.now() > deadline - STEADY_DEADLINE_MS / 2) {
      repaired = true;
      notes.push(`the platform was not healthy 30 s after the previous scenario: ${problems.join('; ')}`);
      const records = await ctx.platform.registry
        .lookupMany(ctx.fleet.devices.map((d) => d.id))
        .catch(() => []);
      const wrong = ctx.fleet.devices.filter((d, i) => d.connected && records[i]?.serverId !== d.serverId);
      const down = ctx.fleet.devices.filter((d) => !d.connected);
      for (const d of wrong) {
        const server = ctx.platform.servers.find((s) => s.serverId === d.serverId);
        if (server) await ctx.fleet.move([d], server);
      }
      if (down.length > 0) await ctx.fleet.connectAll(ctx.platform.servers);
      if (wrong.length + down.length > 0)
        notes.push(
          `so the suite reconnected ${wrong.length} devices whose registry entry was missing or wrong and ${down.length} that were not connected`,
        );
      // A service that stays unready, or an async path that stays broken, is restarted: the
      // next fault should meet a working platform, and the restart is reported.
      const asyncBroken = problems.some((p) => p.startsWith('publish') || p.startsWith('async'));
      const restart = ctx.platform
        .services()
        .filter(
          (s) =>
            problems.some((p) => p.startsWith(`${s.name} `)) ||
            (asyncBroken && (s === ctx.platform.api || s === ctx.platform.processor)),
        );
      for (const s of restart) {
        await s.terminate(20_000);
        await s.start();
      }
      if (restart.length > 0)
        notes.push(`so the suite restarted ${restart.map((s) => s.name).join(' and ')}`);
    }
    // Re-probe pace while the platform settles.
    await sleep(1000);
  }
}

async function runScenario(
  ctx: ScenarioContext,
  scenario: ChaosScenario,
  admin: Admin,
): Promise<ChaosScenarioResult> {
  const started = performance.now();
  const notes: string[] = [];
  const canaries = scenario.canaries?.(ctx) ?? [];
  const { sizes, platform, fleet, observer, log } = ctx;
  log(`scenario ${scenario.id}: ${scenario.title}`);
  try {
    notes.push(...(await steady(ctx, canaries)));
    // Both servers carry devices when a fault hits (a crash moves them all to the survivor).
    const setup = [...(await balance(ctx)), ...((await scenario.prepare?.(ctx)) ?? [])];
    if (setup.length > 0) notes.push(...setup, ...(await steady(ctx, canaries)));
    const traffic = new Traffic(`c${platform.run}-${scenario.id}`, {
      apiUrl: platform.apiUrl,
      apiKey: platform.apiKey,
      producer: ctx.producer,
      pushRequestsTopic: platform.topics.pushRequests,
      deviceIds: fleet.devices.map((d) => d.id),
      userIds: [...fleet.users.keys()],
      ratePerS: sizes.ratePerS,
      ttlSeconds: sizes.ttlSeconds,
      directTimeoutMs: sizes.directTimeoutMs,
      answerTimeoutMs: 60_000,
    });
    const windowStart = Date.now();
    const { value, cost } = await measureCpu(platform.processes(), async () => {
      traffic.start();
      let injection: Injection | undefined;
      let injectionFailed = false;
      let recovery: Promise<{ atMs: number | null; lastProblems: string[] }> | undefined;
      try {
        // Traffic before the fault: the platform is loaded when it hits.
        await sleep(sizes.warmupMs);
        const injecting = scenario.inject(ctx).then(
          (inj) => (injection = inj),
          (err: unknown) => {
            injectionFailed = true;
            throw err;
          },
        );
        recovery = recover(
          ctx,
          canaries,
          () => injection,
          () => injectionFailed,
        );
        await injecting;
        // Traffic after the component is back: the platform must serve it as before.
        await sleep(sizes.afterMs);
      } finally {
        // Also when the injection failed: no traffic or probe outlives its scenario.
        await traffic.stop();
        await recovery;
      }
      const inj: Injection | undefined = injection;
      const recovered = await recovery;
      if (!inj || !recovered) throw new Error('the injection ended without a result');
      const settled = await settle(ctx, traffic, admin);
      return { inj, recovered, settled };
    });
    const windowEnd = Date.now();
    const { inj, recovered, settled } = value;
    notes.push(...inj.notes);
    if (!settled.done) notes.push(`not settled after ${sizes.settleDeadlineMs / 1000} s: ${settled.detail}`);
    if (traffic.notOffered > 0)
      notes.push(`${traffic.notOffered} messages not offered (too many requests in flight)`);
    const tally = reconcile({
      sent: traffic.sent,
      deviceIds: fleet.devices.map((d) => d.id),
      receiptCount: (deviceId, id) => fleet.byId.get(deviceId)?.receipts.get(id)?.count ?? 0,
      events: (id) => observer.events(id),
      inRequestLog: (id) => observer.inRequestLog(id),
      devicesOfUser: (userId) => fleet.users.get(userId) ?? [],
      stayedConnected: (deviceId, subscribed) =>
        fleet.byId.get(deviceId)?.stayedConnected(windowStart, windowEnd, subscribed) ?? false,
    });
    const ratio = stayedRatio(tally);
    const checks = [
      ...verdictChecks(tally, ratio, recovered.atMs, sizes.recoveryDeadlineMs),
      ...(inj.checks?.() ?? []),
    ];
    const publishTimes = traffic.sent
      .filter((s) => s.kind.startsWith('publish') && s.answeredAt !== undefined)
      .map((s) => (s.answeredAt as number) - s.sentAt);
    const publish = publishTimes.length > 0 ? summarize(publishTimes) : undefined;
    const result: ChaosScenarioResult = {
      id: scenario.id,
      title: scenario.title,
      status: checks.every((c) => c.pass) ? 'passed' : 'failed',
      durationMs: round(performance.now() - started, 0),
      downMs: inj.restoredAt - inj.faultAt,
      recoveryMs: recovered.atMs === null ? null : recovered.atMs - inj.faultAt,
      tally,
      stayedRatio: ratio,
      publishAnswerMs: publish
        ? { p50: round(publish.p50, 0), p99: round(publish.p99, 0), max: round(publish.max, 0) }
        : null,
      checks,
      notes,
      lastProbeProblems: recovered.lastProblems,
      cpuMsByProcess: Object.fromEntries(Object.entries(cost).map(([k, c]) => [k, round(c.cpuMs, 0)])),
    };
    return result;
  } catch (err) {
    const error = err instanceof Error ? err.message : String(err);
    return { ...errorResult(scenario, error), durationMs: round(performance.now() - started, 0), notes };
  }
}

/**
 * Probes from the fault on until the platform is healthy after the suite restored the component,
 * or the deadline (counted from the restore) passes. Resolves with when it was healthy (epoch ms).
 */
async function recover(
  ctx: ScenarioContext,
  canaries: readonly string[],
  injection: () => Injection | undefined,
  failed: () => boolean,
): Promise<{ atMs: number | null; lastProblems: string[] }> {
  let lastProblems: string[] = [];
  for (;;) {
    if (failed()) return { atMs: null, lastProblems: ['the injection failed'] };
    const inj = injection();
    if (inj) {
      if (Date.now() > inj.restoredAt + ctx.sizes.recoveryDeadlineMs) return { atMs: null, lastProblems };
      lastProblems = await probePlatform({ ...ctx, canaries }, 3000);
      if (lastProblems.length === 0) return { atMs: Date.now(), lastProblems };
    }
    // Probe pace while the fault lasts.
    await sleep(inj ? 500 : 100);
  }
}

/**
 * Waits until every accepted async request has its terminal event(s), the processor's group has
 * committed everything (no redelivery can add a second terminal event), and nothing changed for
 * `quietMs`, or the settle deadline passes.
 */
async function settle(
  ctx: ScenarioContext,
  traffic: Traffic,
  admin: Admin,
): Promise<{ done: boolean; detail: string }> {
  const deadline = Date.now() + ctx.sizes.settleDeadlineMs;
  const state = async () => {
    const open = unsettled({ sent: traffic.sent, events: (id) => ctx.observer.events(id) });
    const lag = await admin.groupLag(ctx.platform.groupId, ctx.platform.topics.pushRequests).catch(() => -1);
    return { open, lag, events: countEvents(ctx) };
  };
  let last = await state();
  while (Date.now() < deadline) {
    if (last.open === 0 && last.lag === 0) {
      await sleep(ctx.sizes.quietMs);
      const again = await state();
      if (again.open === 0 && again.lag === 0 && again.events === last.events)
        return { done: true, detail: '' };
      last = again;
      continue;
    }
    // Re-check pace while outcomes arrive.
    await sleep(500);
    last = await state();
  }
  return {
    done: false,
    detail: `${last.open} accepted requests without a terminal event, processor group lag ${last.lag === -1 ? 'unknown' : last.lag}`,
  };
}

function countEvents(ctx: ScenarioContext): number {
  let n = 0;
  for (const list of ctx.observer.all().values()) n += list.length;
  return n;
}

function verdictChecks(
  t: Tally,
  ratio: number | null,
  recoveredAt: number | null,
  deadlineMs: number,
): ChaosCheck[] {
  const v = t.violations;
  return [
    { name: 'no silent loss', pass: v.silentLoss === 0, detail: `${v.silentLoss}` },
    {
      name: 'exactly one terminal event per accepted (request, device)',
      pass: v.zeroTerminal === 0 && v.severalTerminal === 0,
      detail: `${v.zeroTerminal} with none, ${v.severalTerminal} with several`,
    },
    {
      name: 'no `delivered` for a message no device received',
      pass: v.deliveredWithoutReceipt === 0,
      detail: `${v.deliveredWithoutReceipt}`,
    },
    {
      name: 'no received message reported not_connected, rejected or expired',
      pass: v.receivedNotDelivered === 0,
      detail: `${v.receivedNotDelivered}`,
    },
    {
      name: `delivered/accepted ≥ ${STAYED_MIN_LABEL} for devices that stayed connected`,
      pass: ratio === null || ratio >= STAYED_MIN_RATIO,
      detail: `${t.stayed.delivered}/${t.stayed.accepted}`,
    },
    {
      name: 'healthy again after the fault',
      pass: recoveredAt !== null,
      detail: recoveredAt === null ? `not within ${deadlineMs / 1000} s of the restore` : 'yes',
    },
  ];
}
