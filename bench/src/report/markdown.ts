import type { BenchResult, Row, ScenarioResult } from './model.ts';

function fmt(v: number | null): string {
  if (v === null) return '—';
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  return String(Math.round(v * 100) / 100);
}

/** `0.85×` with a mark when the ratio is worse than 1.0 in the direction that matters. */
function ratio(r: Row): string {
  if (r.ratio === null) return '—';
  const worse = r.better === 'higher' ? r.ratio < 1 : r.ratio > 1;
  return `${r.ratio}×${worse ? ' ⚠' : ''}`;
}

function scenarioSection(s: ScenarioResult): string[] {
  const lines = [`### ${s.id}. ${s.title}`, ''];
  if (s.status !== 'ok') {
    lines.push(`**${s.status}**: ${s.reason ?? ''}`, '');
    return lines;
  }
  const hasBaseline = s.rows.some((r) => r.baseline !== null);
  lines.push(
    hasBaseline
      ? '| metric | unit | baseline | pushline | pushline/baseline |'
      : '| metric | unit | pushline |',
    hasBaseline ? '|---|---|--:|--:|--:|' : '|---|---|--:|',
  );
  for (const r of s.rows) {
    lines.push(
      hasBaseline
        ? `| ${r.metric} | ${r.unit} | ${fmt(r.baseline)} | ${fmt(r.pushline)} | ${ratio(r)} |`
        : `| ${r.metric} | ${r.unit} | ${fmt(r.pushline)} |`,
    );
  }
  lines.push('', ...s.notes.map((n) => `- ${n}`), '');
  return lines;
}

/** The Markdown rendering of one result file: targets first, then one table per scenario. */
export function renderMarkdown(result: BenchResult, files: { json: string; svg: string }): string {
  const m = result.machine;
  const lines = [
    `# Pushline bench ${result.startedAt.slice(0, 10)} (${result.commit}${result.dirty ? ', uncommitted changes' : ''})`,
    '',
    `${result.options.smoke ? '**Smoke run** (tiny sizes; numbers are not meaningful). ' : ''}` +
      `${m.cpus} × ${m.cpuModel}, ${Math.round(m.totalMemBytes / 2 ** 30)} GiB, Node ${m.node}. ` +
      `Devices: ${result.options.devices} (storm: ${result.options.stormDevices}). ` +
      `Started ${result.startedAt}, finished ${result.finishedAt}.`,
    '',
    `Raw data: [${files.json}](${files.json}). Chart: [${files.svg}](${files.svg}).`,
    '',
    `![chart](${files.svg})`,
    '',
    '## Targets',
    '',
    '| goal | measured | met |',
    '|---|---|:-:|',
    ...result.targets.map(
      (t) => `| ${t.goal} | ${t.measured} | ${t.pass === null ? '—' : t.pass ? 'yes' : '**no**'} |`,
    ),
    '',
    '## Scenarios',
    '',
    ...result.scenarios.flatMap(scenarioSection),
  ];
  return `${lines.join('\n')}\n`;
}
