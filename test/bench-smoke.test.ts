import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { BenchResult } from '@pushline/bench';
import { testInfra } from '@pushline/testkit';

/**
 * Keeps the benchmark harness alive: `npm run bench -- --smoke` runs every scenario at tiny sizes
 * against the suite's Kafka and Redis and must write a well-formed result. No timing is asserted.
 */
const root = fileURLToPath(new URL('..', import.meta.url));
let out: string | undefined;

after(async () => {
  if (out) await rm(out, { recursive: true, force: true });
});

// The bound is a hang guard, not a speed goal: on a loaded 2-core runner the nine tiny scenarios
// (platform start, a Redis restart, a reconnect storm) have taken close to two minutes.
test(
  'bench --smoke runs every scenario and writes JSON, Markdown and SVG',
  { timeout: 300_000 },
  async () => {
    const infra = testInfra();
    out = await mkdtemp(join(tmpdir(), 'pushline-bench-smoke-'));
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        ['bench/src/main.ts', '--smoke', `--out=${out}`],
        {
          cwd: root,
          env: {
            ...process.env,
            PUSHLINE_KAFKA_BROKERS: infra.kafkaBrokers.join(','),
            PUSHLINE_REDIS_URL: infra.redisUrl,
          },
          timeout: 280_000,
          maxBuffer: 16 * 1024 * 1024,
        },
        (_err, _stdout, stderrText) => resolve({ code: child.exitCode, stderr: stderrText }),
      );
    });
    assert.equal(code, 0, `bench exited with ${code}:\n${stderr}`);

    const files = await readdir(out);
    const json = files.find((f) => /^\d{4}-\d{2}-\d{2}-[0-9a-f]+\.json$/.test(f));
    assert.ok(json, `no result JSON among ${files.join(', ')}`);
    const stem = json.slice(0, -'.json'.length);
    assert.ok(files.includes(`${stem}.md`) && files.includes(`${stem}.svg`) && files.includes('latest.md'));

    const result = BenchResult.parse(JSON.parse(await readFile(join(out, json), 'utf8')));
    assert.equal(result.options.smoke, true);
    assert.deepEqual(
      result.scenarios.map((s) => [s.id, s.status, s.reason]),
      [1, 2, 5, 4, 3, 7, 8, 9, 6].map((id) => [id, 'ok', undefined]),
    );
    for (const s of result.scenarios) assert.ok(s.rows.length > 0, `scenario ${s.id} reported no rows`);
    // The registry probe (the servers' device sets) saw every device of scenario 1 arrive.
    const registryRate = result.scenarios
      .find((s) => s.id === 1)
      ?.rows.find((r) => r.key === 'capacity.registry_rate')?.pushline;
    assert.ok(typeof registryRate === 'number' && registryRate > 0, `registry rate ${String(registryRate)}`);
    // Memory, connect CPU, direct push throughput / CPU / p99, d2d, async, fan-out CPU (issue 13 split
    // direct push into three and added connect and fan-out), async with silent devices, reconnect
    // storm, Redis restart.
    assert.equal(result.targets.length, 11);
    assert.equal(new Set(result.targets.map((t) => t.goal)).size, 11, 'one check per goal');

    const svg = await readFile(join(out, `${stem}.svg`), 'utf8');
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.match(svg, /<rect /);
    const md = await readFile(join(out, `${stem}.md`), 'utf8');
    assert.match(md, /\| metric \| unit \| baseline \| pushline \| pushline\/baseline \|/);
  },
);
