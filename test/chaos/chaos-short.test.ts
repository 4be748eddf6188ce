import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ChaosResult, SHORT_SCENARIOS, summaryTable } from '@pushline/bench';
import { testInfra } from '@pushline/testkit';

/**
 * The short chaos run (`npm run chaos -- --short`): the whole platform as child processes on
 * the run's Kafka and the suite's own redis-server, 20 socket.io devices that ack, 40 messages/s
 * over every path, and real faults: kill -9 of a connection server and of the processor, a
 * burst of poison records, kill -9 of redis-server with AOF. Every accepted request must end
 * with exactly one terminal outcome that matches what the devices received, and devices that
 * stayed connected must get everything.
 */
const root = fileURLToPath(new URL('../..', import.meta.url));
let out: string | undefined;

after(async () => {
  if (out) await rm(out, { recursive: true, force: true });
});

// A failing run waits out its recovery and settle deadlines; it must still end in assertions.
test(
  'short chaos run: every accepted request accounted for under real faults',
  { timeout: 420_000 },
  async (t) => {
    const infra = testInfra();
    out = await mkdtemp(join(tmpdir(), 'pushline-chaos-short-'));
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        ['--disable-warning=TimeoutNegativeWarning', 'bench/src/chaos/main.ts', '--short', `--out=${out}`],
        {
          cwd: root,
          // The suite kills and restarts Redis, so it runs its own; the broker it only uses.
          env: { ...process.env, PUSHLINE_KAFKA_BROKERS: infra.kafkaBrokers.join(',') },
          timeout: 400_000,
          maxBuffer: 16 * 1024 * 1024,
        },
        (_err, _stdout, stderrText) => resolve({ code: child.exitCode, stderr: stderrText }),
      );
    });
    const files = await readdir(out);
    const json = files.find((f) => /^chaos-\d{4}-\d{2}-\d{2}-[0-9a-f]+-short\.json$/.test(f));
    assert.ok(json, `no result JSON (exit ${code}) among ${files.join(', ')}:\n${stderr.slice(-4000)}`);
    assert.ok(files.includes(json.replace(/\.json$/, '.md')), 'a Markdown report next to the JSON');
    const result = ChaosResult.parse(JSON.parse(await readFile(join(out, json), 'utf8')));
    for (const line of summaryTable(result).split('\n')) t.diagnostic(line);
    assert.equal(result.options.short, true);
    assert.deepEqual(
      result.scenarios.map((s) => s.id),
      [...SHORT_SCENARIOS],
    );

    for (const s of result.scenarios) {
      await t.test(s.id, () => {
        assert.equal(s.error, undefined, `${s.id} did not run to the end`);
        const tally = s.tally;
        assert.ok(tally, `${s.id} has no reconciliation`);
        // Not vacuous: traffic flowed on every path and the fault happened.
        for (const kind of ['publish-device', 'kafka-device', 'publish-user', 'publish-topic', 'direct']) {
          assert.ok((tally.acceptedByKind[kind] ?? 0) > 0, `${s.id}: no accepted ${kind} requests`);
        }
        assert.ok(tally.stayed.accepted > 0, `${s.id}: no device stayed connected`);
        assert.notEqual(s.downMs, null);
        const failed = s.checks.filter((c) => !c.pass).map((c) => `${c.name}: ${c.detail}`);
        const examples = Object.entries(tally.examples)
          .filter(([kind]) => kind !== 'receivedTimeout')
          .map(([kind, list]) => `${kind}: ${list.join(' | ')}`);
        assert.deepEqual(failed, [], `${s.id} failed checks; examples: ${examples.join('\n')}`);
        assert.equal(s.status, 'passed');
      });
    }
    assert.equal(result.pass, true);
    assert.equal(code, 0, `the suite exits 0 when every scenario passed:\n${stderr.slice(-2000)}`);
  },
);
