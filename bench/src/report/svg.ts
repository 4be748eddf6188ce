import type { BenchResult, Chart } from './model.ts';

/** Hand-written SVG: one panel of grouped vertical bars per chart, stacked. No dependencies. */

const WIDTH = 960;
const PANEL_HEIGHT = 300;
const MARGIN = { top: 48, right: 24, bottom: 56, left: 72 };
const PALETTE = ['#8c8c8c', '#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#d62728'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function label(v: number): string {
  if (v >= 10_000) return `${(v / 1000).toFixed(1)}k`;
  if (v >= 100) return String(Math.round(v));
  return String(Math.round(v * 100) / 100);
}

/** A "nice" axis maximum: 1, 2 or 5 times a power of ten, at or above `max`. */
function niceMax(max: number): number {
  if (max <= 0) return 1;
  const pow = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) if (step * pow >= max) return step * pow;
  return 10 * pow;
}

function panel(chart: Chart, y0: number): string {
  const groups = [...new Set(chart.bars.map((b) => b.group))];
  const series = [...new Set(chart.bars.map((b) => b.series))];
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const top = niceMax(Math.max(0, ...chart.bars.map((b) => b.value)));
  const yOf = (v: number) => y0 + MARGIN.top + plotH - (v / top) * plotH;
  const groupW = plotW / Math.max(1, groups.length);
  const barW = Math.min(48, (groupW * 0.8) / Math.max(1, series.length));
  const out: string[] = [];
  out.push(
    `<text x="${MARGIN.left}" y="${y0 + 22}" class="title">${esc(chart.title)} (${esc(chart.unit)})</text>`,
  );
  for (let t = 0; t <= 4; t++) {
    const v = (top * t) / 4;
    const y = yOf(v);
    out.push(`<line x1="${MARGIN.left}" x2="${WIDTH - MARGIN.right}" y1="${y}" y2="${y}" class="grid"/>`);
    out.push(`<text x="${MARGIN.left - 8}" y="${y + 4}" class="tick" text-anchor="end">${label(v)}</text>`);
  }
  groups.forEach((g, gi) => {
    const gx = MARGIN.left + gi * groupW + (groupW - barW * series.length) / 2;
    series.forEach((s, si) => {
      const bar = chart.bars.find((b) => b.group === g && b.series === s);
      if (!bar) return;
      const x = gx + si * barW;
      const y = yOf(bar.value);
      const h = y0 + MARGIN.top + plotH - y;
      out.push(
        `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${PALETTE[si % PALETTE.length]}"><title>${esc(`${s} ${g}: ${bar.value} ${chart.unit}`)}</title></rect>`,
      );
      out.push(
        `<text x="${(x + barW / 2 - 1).toFixed(1)}" y="${(y - 4).toFixed(1)}" class="value" text-anchor="middle">${label(bar.value)}</text>`,
      );
    });
    out.push(
      `<text x="${(MARGIN.left + gi * groupW + groupW / 2).toFixed(1)}" y="${y0 + MARGIN.top + plotH + 18}" class="tick" text-anchor="middle">${esc(g)}</text>`,
    );
  });
  // Legend entries flow left to right, each as wide as its label (about 7 px a character at 12 px).
  let legendX = MARGIN.left;
  series.forEach((s, si) => {
    const y = y0 + PANEL_HEIGHT - 14;
    out.push(
      `<rect x="${legendX}" y="${y - 10}" width="12" height="12" fill="${PALETTE[si % PALETTE.length]}"/>`,
    );
    out.push(`<text x="${legendX + 18}" y="${y}" class="legend">${esc(s)}</text>`);
    legendX += 18 + s.length * 7 + 24;
  });
  return out.join('\n');
}

export function renderSvg(result: BenchResult): string {
  const charts = result.scenarios.flatMap((s) => s.charts).filter((c) => c.bars.length > 0);
  const header = 40;
  const height = header + Math.max(1, charts.length) * PANEL_HEIGHT;
  const body =
    charts.length === 0
      ? `<text x="${MARGIN.left}" y="${header + 40}" class="title">no chartable results in this run</text>`
      : charts.map((c, i) => panel(c, header + i * PANEL_HEIGHT)).join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, sans-serif">
<style>
  .title { font-size: 15px; font-weight: 600; fill: #222; }
  .tick { font-size: 11px; fill: #555; }
  .value { font-size: 10px; fill: #333; }
  .legend { font-size: 12px; fill: #222; }
  .grid { stroke: #e4e4e4; stroke-width: 1; }
</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="${MARGIN.left}" y="26" class="title">${esc(`Pushline bench ${result.startedAt.slice(0, 16)}Z, ${result.commit}${result.options.smoke ? ' (smoke)' : ''}`)}</text>
${body}
</svg>
`;
}
