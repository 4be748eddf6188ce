// `npm run chaos`: starts the platform, injects each fault it can produce here under live traffic,
// reconciles every accepted request, and writes JSON and Markdown results. See
// docs/delivery-guarantees.md ("What the chaos suite shows").
import { fileURLToPath } from 'node:url';
import { CHAOS_USAGE, parseChaosOptions } from './options.ts';
import { summaryTable } from './report.ts';
import { runChaos } from './run.ts';

const log = (line: string) => process.stderr.write(`[chaos] ${line}\n`);
const resultsDir = fileURLToPath(new URL('../../results/', import.meta.url));

let options;
try {
  options = parseChaosOptions(process.argv.slice(2), process.env, resultsDir);
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n${CHAOS_USAGE}\n`);
  process.exit(2);
}

// An interrupted run exits at once; the exit hook kills every service the suite started, and
// devstack's guardians take Kafka and Redis down with this process.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping`);
    process.exit(130);
  });
}

const { result, files } = await runChaos(options, log);
process.stdout.write(`\n${summaryTable(result)}\n\n`);
for (const s of result.scenarios) {
  for (const c of s.checks.filter((x) => !x.pass)) log(`${s.id}: FAILED ${c.name}: ${c.detail}`);
  if (s.error) log(`${s.id}: ERROR ${s.error}`);
}
log(`results: ${files.json}`);
log(`         ${files.markdown}`);
if (files.latest) log(`         ${files.latest}`);
process.exit(result.pass ? 0 : 1);
