import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { STAYED_MIN_LABEL, VIOLATIONS } from './reconcile.ts';

const Count = z.number().int().nonnegative();

export const ChaosTally = z.object({
  offered: Count,
  accepted: Count,
  acceptedByKind: z.record(z.string(), Count),
  refused: Count,
  unknown: Count,
  delivered: Count,
  duplicates: Count,
  stored: Count,
  outcomes: z.record(z.string(), Count),
  violations: z.object(
    Object.fromEntries(VIOLATIONS.map((v) => [v, Count])) as Record<
      (typeof VIOLATIONS)[number],
      typeof Count
    >,
  ),
  receivedTimeout: Count,
  refusedButReceived: Count,
  acceptedNotInLog: Count,
  stayed: z.object({ accepted: Count, delivered: Count }),
  examples: z.record(z.string(), z.array(z.string())),
});
export type ChaosTally = z.infer<typeof ChaosTally>;

export const ChaosCheck = z.object({ name: z.string(), pass: z.boolean(), detail: z.string() });
export type ChaosCheck = z.infer<typeof ChaosCheck>;

export const ChaosScenarioResult = z.object({
  id: z.string(),
  title: z.string(),
  /** passed: every check held; failed: a check did not; error: the scenario could not run to the end. */
  status: z.enum(['passed', 'failed', 'error']),
  error: z.string().optional(),
  durationMs: z.number(),
  /** ms from the fault: until the suite had restored the component, and until a probe found the platform healthy. */
  downMs: z.number().nullable(),
  recoveryMs: z.number().nullable(),
  tally: ChaosTally.nullable(),
  stayedRatio: z.number().nullable(),
  /** Time /v1/publish took to answer (any answer), ms. */
  publishAnswerMs: z.object({ p50: z.number(), p99: z.number(), max: z.number() }).nullable(),
  checks: z.array(ChaosCheck),
  notes: z.array(z.string()),
  /** Probe problems seen last before recovery (or at the deadline). */
  lastProbeProblems: z.array(z.string()),
  cpuMsByProcess: z.record(z.string(), z.number()),
});
export type ChaosScenarioResult = z.infer<typeof ChaosScenarioResult>;

export const ChaosResult = z.object({
  schemaVersion: z.literal(1),
  startedAt: z.string(),
  finishedAt: z.string(),
  commit: z.string(),
  dirty: z.boolean(),
  machine: z.object({ cpus: z.number(), node: z.string() }),
  options: z.object({
    scenarios: z.array(z.string()),
    short: z.boolean(),
    devices: z.number(),
    ratePerS: z.number(),
    downMs: z.number(),
    redisDownMs: z.number(),
    externalKafka: z.boolean(),
  }),
  logDir: z.string(),
  pass: z.boolean(),
  scenarios: z.array(ChaosScenarioResult),
});
export type ChaosResult = z.infer<typeof ChaosResult>;

const pct = (r: number | null) => (r === null ? '—' : `${(Math.floor(r * 100_000) / 1000).toFixed(3)}%`);
const secs = (ms: number | null) => (ms === null ? 'not recovered' : `${(ms / 1000).toFixed(1)} s`);

/** The per-scenario summary table, as printed and as written into the Markdown. */
export function summaryTable(result: ChaosResult): string {
  const head =
    '| scenario | verdict | accepted | delivered | duplicates | silent losses | zero terminal | several terminal | delivered w/o receipt | received, not delivered | stayed-connected delivered | down | recovery | took |';
  const sep = `|${' --- |'.repeat(14)}`;
  const rows = result.scenarios.map((s) => {
    const t = s.tally;
    const v = t?.violations;
    return `| ${s.id} | ${s.status === 'passed' ? 'pass' : s.status === 'failed' ? '**FAIL**' : '**ERROR**'} | ${t?.accepted ?? '—'} | ${t?.delivered ?? '—'} | ${t?.duplicates ?? '—'} | ${v?.silentLoss ?? '—'} | ${v?.zeroTerminal ?? '—'} | ${v?.severalTerminal ?? '—'} | ${v?.deliveredWithoutReceipt ?? '—'} | ${v?.receivedNotDelivered ?? '—'} | ${t ? `${t.stayed.delivered}/${t.stayed.accepted} (${pct(s.stayedRatio)})` : '—'} | ${s.downMs === null ? '—' : secs(s.downMs)} | ${s.error ? '—' : secs(s.recoveryMs)} | ${Math.round(s.durationMs / 1000)} s |`;
  });
  return [head, sep, ...rows].join('\n');
}

export function renderMarkdown(result: ChaosResult): string {
  const lines = [
    `# Chaos run ${result.startedAt.slice(0, 10)} (${result.commit}${result.dirty ? ', dirty' : ''})`,
    '',
    `${result.options.short ? 'Short run (`npm test`)' : 'Full run (`npm run chaos`)'}: ${result.options.devices} devices on two connection servers, ${result.options.ratePerS} messages/s offered (async publish, records straight into Kafka, user and topic publishes, direct pushes), components held down ${result.options.downMs / 1000} s (redis-server ${result.options.redisDownMs / 1000} s). ${result.machine.cpus} cores, Node ${result.machine.node}. Kafka ${result.options.externalKafka ? 'external (not restarted)' : 'started by the suite'}.`,
    '',
    `**Verdict: ${result.pass ? 'pass' : 'FAIL'}.** A scenario fails on a silent loss, a (request, device) pair with zero or several terminal events, a \`delivered\` outcome for a message no device received, a device that received a message reported \`not_connected\`/\`rejected\`/\`expired\`, delivered/accepted below ${STAYED_MIN_LABEL} for devices that stayed connected, no recovery within the deadline, or a check of its own.`,
    '',
    summaryTable(result),
    '',
    'Units: accepted and delivered count requests (delivered = reached at least one device); the stayed-connected ratio counts (request, device) pairs whose device held one connection through the whole scenario. Recovery: from the fault until a probe found every service ready, every device connected with correct presence, and a direct push and an async publish delivered, after the suite had restored the component.',
    '',
  ];
  for (const s of result.scenarios) {
    lines.push(`## ${s.id}: ${s.title}`, '');
    if (s.error) lines.push(`Error: ${s.error}`, '');
    for (const n of s.notes) lines.push(`- ${n}`);
    if (s.notes.length > 0) lines.push('');
    const t = s.tally;
    if (t) {
      lines.push(
        `Offered ${t.offered}: accepted ${t.accepted} (${Object.entries(t.acceptedByKind)
          .map(([k, n]) => `${k} ${n}`)
          .join(
            ', ',
          )}), refused ${t.refused}, unanswered ${t.unknown}; ${t.stored} non-terminal \`stored\` events; ${t.receivedTimeout} timeouts for messages the device had; ${t.refusedButReceived} refused or unanswered requests delivered anyway; ${t.acceptedNotInLog} accepted async requests never seen on the push-requests topic.`,
        '',
        '| terminal outcome (first per pair) | count |',
        '| --- | --- |',
        ...Object.entries(t.outcomes)
          .sort((a, b) => b[1] - a[1])
          .map(([k, n]) => `| ${k} | ${n} |`),
        '',
      );
      if (s.publishAnswerMs)
        lines.push(
          `/v1/publish answered in p50 ${s.publishAnswerMs.p50} ms, p99 ${s.publishAnswerMs.p99} ms, max ${s.publishAnswerMs.max} ms.`,
          '',
        );
    }
    const failing = s.checks.filter((c) => !c.pass);
    lines.push('| check | result | detail |', '| --- | --- | --- |');
    for (const c of s.checks)
      lines.push(`| ${c.name} | ${c.pass ? 'pass' : '**FAIL**'} | ${c.detail.replace(/\|/g, '\\|')} |`);
    lines.push('');
    if (failing.length > 0 && t) {
      for (const [kind, list] of Object.entries(t.examples)) {
        if (list.length === 0) continue;
        lines.push(`Examples of ${kind}:`, '', ...list.map((e) => `- \`${e}\``), '');
      }
    }
    if (s.lastProbeProblems.length > 0 && s.recoveryMs === null)
      lines.push(`Last probe before the deadline: ${s.lastProbeProblems.join('; ')}`, '');
  }
  lines.push(`Service logs of this run: \`${result.logDir}\`.`, '');
  return lines.join('\n');
}

export interface WrittenChaosFiles {
  readonly json: string;
  readonly markdown: string;
  readonly latest: string | undefined;
}

/**
 * `chaos-<date>-<sha>[-short].json|.md` in `dir` (a taken name gets `-2`, `-3`, …), and
 * `chaos-latest.md` after a full run of every scenario.
 */
export async function writeChaosResults(
  dir: string,
  result: ChaosResult,
  complete: boolean,
): Promise<WrittenChaosFiles> {
  await mkdir(dir, { recursive: true });
  const stem = `chaos-${result.startedAt.slice(0, 10)}-${result.commit}${result.options.short ? '-short' : complete ? '' : `-${result.options.scenarios.join('+')}`}`;
  let base = stem;
  for (let i = 2; existsSync(join(dir, `${base}.json`)); i++) base = `${stem}-${i}`;
  const markdown = renderMarkdown(result);
  const files = {
    json: join(dir, `${base}.json`),
    markdown: join(dir, `${base}.md`),
    latest: complete && !result.options.short ? join(dir, 'chaos-latest.md') : undefined,
  };
  await writeFile(files.json, `${JSON.stringify(result, null, 2)}\n`);
  await writeFile(files.markdown, markdown);
  if (files.latest) await writeFile(files.latest, markdown);
  return files;
}
