import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { jitCompileDeltaMs, measureCpu, perMessage, readJitCompileMs } from '@pushline/bench';

/**
 * The bench shows apart what a JVM (the Kafka broker) spends compiling its own code: a broker
 * started for a bench run does that through the first scenarios, a long-running one does not.
 * Read from a real JVM's threads in /proc, as the bench reads the broker's.
 */
const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

// A hot loop: HotSpot compiles it (C1, then C2 on-stack replacement) while it runs; the source
// launcher's in-process javac gives its compiler threads more to do before that.
const HOT_LOOP = `
public class HotLoop {
  public static void main(String[] args) throws Exception {
    long sum = 0;
    for (int round = 0; round < 20; round++) {
      for (int i = 0; i < 20_000_000; i++) sum += i % 7;
    }
    System.out.println("ready " + sum);
    System.in.read();
  }
}
`;

test('a JVM’s JIT compiler threads are read from /proc, and counted in its CPU', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pushline-jit-'));
  dirs.push(dir);
  const source = join(dir, 'HotLoop.java');
  await writeFile(source, HOT_LOOP);
  const jvm = spawn('java', ['-Xmx64m', source], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const lines = createInterface({ input: jvm.stdout });
    const { pid } = jvm;
    assert.ok(pid !== undefined, 'java did not start');
    // Measured over the JVM's whole life so far, as the bench measures a window: start to "ready".
    const { cost } = await measureCpu([{ name: 'jvm', pid }], async () => {
      for await (const line of lines) if (line.startsWith('ready')) return;
    });
    const jvmCost = cost['jvm'];
    assert.ok(jvmCost);
    assert.ok(jvmCost.jitMs > 0, `no compile time read: ${JSON.stringify(jvmCost)}`);
    assert.ok(jvmCost.jitMs <= jvmCost.cpuMs, `compile ${jvmCost.jitMs} ms over total ${jvmCost.cpuMs} ms`);

    const threads = await readJitCompileMs(pid);
    assert.ok(threads.size >= 1, 'no C1/C2 compiler thread found');

    const per = perMessage(cost, 10);
    assert.equal(per.jitUs, Math.round(((jvmCost.jitMs * 1000) / 10) * 10) / 10);
    assert.equal(per.byProcess['jvm']?.jitUs, per.jitUs);
  } finally {
    jvm.stdin.end();
    if (jvm.exitCode === null) await once(jvm, 'exit');
  }
});

test('a node process has no JIT compiler threads to show apart', async () => {
  assert.equal((await readJitCompileMs(process.pid)).size, 0);
  const { cost } = await measureCpu([{ name: 'self', pid: process.pid }], () => Promise.resolve());
  assert.equal(cost['self']?.jitMs, 0);
  assert.equal(perMessage(cost, 1).byProcess['self']?.jitUs, undefined);
});

test('compile time is summed per thread: new threads whole, retired ones left out', () => {
  const before = new Map([
    ['101', 40],
    ['102', 10],
  ]);
  // 101 compiled 25 ms more, 102 was retired by the JVM, 103 started and compiled 5 ms.
  const afterReading = new Map([
    ['101', 65],
    ['103', 5],
  ]);
  assert.equal(jitCompileDeltaMs(before, afterReading), 30);
  assert.equal(jitCompileDeltaMs(new Map(), new Map()), 0);
});
