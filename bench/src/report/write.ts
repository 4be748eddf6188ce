import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderMarkdown } from './markdown.ts';
import type { BenchResult } from './model.ts';
import { renderSvg } from './svg.ts';

export interface WrittenFiles {
  readonly json: string;
  readonly markdown: string;
  readonly svg: string;
  readonly latest: string;
}

/** Writes `<date>-<sha>.json|.md|.svg` and `latest.md` into `dir`. */
export async function writeResults(dir: string, result: BenchResult): Promise<WrittenFiles> {
  await mkdir(dir, { recursive: true });
  const base = `${result.startedAt.slice(0, 10)}-${result.commit}`;
  const names = { json: `${base}.json`, svg: `${base}.svg`, md: `${base}.md` };
  const markdown = renderMarkdown(result, names);
  const files: WrittenFiles = {
    json: join(dir, names.json),
    markdown: join(dir, names.md),
    svg: join(dir, names.svg),
    latest: join(dir, 'latest.md'),
  };
  await writeFile(files.json, `${JSON.stringify(result, null, 2)}\n`);
  await writeFile(files.svg, renderSvg(result));
  await writeFile(files.markdown, markdown);
  await writeFile(files.latest, markdown);
  return files;
}
