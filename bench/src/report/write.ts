import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderMarkdown } from './markdown.ts';
import type { BenchResult } from './model.ts';
import { renderSvg } from './svg.ts';

export interface WrittenFiles {
  readonly json: string;
  readonly markdown: string;
  readonly svg: string;
  /** Only after a run of every scenario. */
  readonly latest: string | undefined;
}

/**
 * Writes `<date>-<sha>.json|.md|.svg` into `dir` (`<date>-<sha>-s<ids>-n<devices>` when only some
 * scenarios ran, so a partial run never overwrites a full one), and `latest.md` after a full run.
 * A name already taken (the same run repeated on one commit) gets `-2`, `-3`, … rather than
 * overwriting committed results.
 */
export async function writeResults(
  dir: string,
  result: BenchResult,
  allScenarios: readonly number[],
): Promise<WrittenFiles> {
  await mkdir(dir, { recursive: true });
  const full = allScenarios.every((id) => result.options.scenarios.includes(id));
  const stem = `${result.startedAt.slice(0, 10)}-${result.commit}${full ? '' : `-s${result.options.scenarios.join('')}-n${result.options.devices}`}`;
  let base = stem;
  for (let i = 2; existsSync(join(dir, `${base}.json`)); i++) base = `${stem}-${i}`;
  const names = { json: `${base}.json`, svg: `${base}.svg`, md: `${base}.md` };
  const markdown = renderMarkdown(result, names);
  const files: WrittenFiles = {
    json: join(dir, names.json),
    markdown: join(dir, names.md),
    svg: join(dir, names.svg),
    latest: full ? join(dir, 'latest.md') : undefined,
  };
  await writeFile(files.json, `${JSON.stringify(result, null, 2)}\n`);
  await writeFile(files.svg, renderSvg(result));
  await writeFile(files.markdown, markdown);
  if (files.latest) await writeFile(files.latest, markdown);
  return files;
}
