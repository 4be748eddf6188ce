import { open, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export type LogFn = (line: string) => void;

// Silence is the default: test runners parse stdout, so progress goes nowhere unless asked for.
export const noLog: LogFn = () => {};

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env['PUSHLINE_CACHE_DIR'];
  return fromEnv !== undefined && fromEnv !== '' ? path.resolve(fromEnv) : path.join(REPO_ROOT, '.cache');
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

/** Resolves after `ms`, or early when `abort` settles; never used to wait for a condition by itself. */
export function delay(ms: number, abort?: Promise<unknown>): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    abort?.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      () => {
        clearTimeout(timer);
        resolve();
      },
    );
  });
}

/** Last `maxLines` lines of a file, reading at most 64 KiB from its end; '' when it does not exist. */
async function tailFile(file: string, maxLines = 40): Promise<string> {
  let size: number;
  try {
    size = (await stat(file)).size;
  } catch {
    return '';
  }
  const length = Math.min(size, 64 * 1024);
  const handle = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    await handle.read(buf, 0, length, size - length);
    const lines = buf.toString('utf8').split('\n');
    if (lines.at(-1) === '') lines.pop();
    return lines.slice(-maxLines).join('\n');
  } finally {
    await handle.close();
  }
}

/** Error text with the tails of the given log files, so a failed start explains itself. */
export async function withLogTails(message: string, files: readonly string[]): Promise<string> {
  const parts = [message];
  for (const file of files) {
    const tail = await tailFile(file);
    if (tail !== '') parts.push(`--- last lines of ${file} ---\n${tail}`);
  }
  return parts.join('\n');
}

/** Absolute path of an executable found on PATH, or undefined. */
export async function findOnPath(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | undefined> {
  for (const dir of (env['PATH'] ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      const st = await stat(candidate);
      if (st.isFile() && (st.mode & 0o111) !== 0) return candidate;
    } catch {
      // not in this PATH entry
    }
  }
  return undefined;
}
