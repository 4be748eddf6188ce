// `npm run bench`: starts the baseline and the real platform, runs the selected scenarios, and
// writes JSON, Markdown and SVG results. See docs/performance.md.
import { fileURLToPath } from 'node:url';
import { USAGE, parseOptions } from './options.ts';
import { runBench } from './run.ts';

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);
const resultsDir = fileURLToPath(new URL('../results/', import.meta.url));

let options;
try {
  const argv = process.argv.slice(2);
  const smoke = argv.includes('--smoke');
  // Smoke runs keep the committed results untouched unless --out says otherwise.
  options = parseOptions(argv, smoke ? `${resultsDir}tmp/smoke` : resultsDir);
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n${USAGE}\n`);
  process.exit(2);
}

// An interrupted run exits at once; the exit hook kills every server the bench started.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping`);
    process.exit(130);
  });
}

const run = await runBench(options, log);
log(`results: ${run.files.json}`);
log(`         ${run.files.markdown}`);
log(`         ${run.files.svg}`);
if (run.files.latest) log(`         ${run.files.latest}`);
for (const t of run.result.targets)
  log(`target: ${t.goal}: ${t.measured} [${t.pass === null ? 'n/a' : t.pass ? 'met' : 'MISSED'}]`);
const failed = run.result.scenarios.filter((s) => s.status === 'failed');
process.exit(failed.length > 0 ? 1 : 0);
