import { readdir, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** The signal the bench's servers write a heap snapshot on (`--heapsnapshot-signal`). */
const HEAP_SNAPSHOT_SIGNAL = 'SIGUSR2';

/**
 * NODE_OPTIONS for a server whose heap the bench may snapshot: Node itself writes the snapshot on
 * the signal, so the server needs no code for it. Snapshots land in `dir`.
 */
export function heapSnapshotNodeOptions(dir: string): string {
  return `--heapsnapshot-signal=${HEAP_SNAPSHOT_SIGNAL} --diagnostic-dir=${dir}`;
}

/** Combines the parent's NODE_OPTIONS with extra flags, skipping empty parts. */
export function nodeOptions(...parts: (string | undefined)[]): string {
  return parts.filter(Boolean).join(' ');
}

/**
 * Signals `pid` to write a heap snapshot into `dir` and resolves with its path, renamed to
 * `<label>.heapsnapshot`. Node writes it synchronously on the main thread, so once the file
 * exists, an answer to `ping` (an HTTP request to the process) means the write is complete.
 */
export async function takeHeapSnapshot(opts: {
  readonly pid: number;
  readonly dir: string;
  readonly label: string;
  readonly ping: () => Promise<void>;
  readonly timeoutMs?: number;
}): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const mine = (f: string) =>
    f.startsWith('Heap.') && f.includes(`.${opts.pid}.`) && f.endsWith('.heapsnapshot');
  const existing = new Set((await readdir(opts.dir)).filter(mine));
  process.kill(opts.pid, HEAP_SNAPSHOT_SIGNAL);
  const deadline = Date.now() + timeoutMs;
  let file: string | undefined;
  while (!file) {
    if (Date.now() > deadline)
      throw new Error(`no heap snapshot from pid ${opts.pid} within ${timeoutMs} ms`);
    file = (await readdir(opts.dir)).find((f) => mine(f) && !existing.has(f));
    // Polling pace only; the loop ends when the file appears or at the deadline.
    if (!file) await sleep(100);
  }
  const bound = new AbortController();
  try {
    await Promise.race([
      opts.ping(),
      sleep(Math.max(0, deadline - Date.now()), undefined, { signal: bound.signal }).then(() => {
        throw new Error(`pid ${opts.pid} did not answer after its heap snapshot within ${timeoutMs} ms`);
      }),
    ]);
  } finally {
    bound.abort();
  }
  const target = join(opts.dir, `${opts.label}.heapsnapshot`);
  await rename(join(opts.dir, file), target);
  if ((await stat(target)).size === 0) throw new Error(`empty heap snapshot ${target}`);
  return target;
}
