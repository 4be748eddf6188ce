import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { errorMessage, findOnPath } from './util.ts';
import type { LogFn } from './util.ts';

const execFileAsync = promisify(execFile);

// One apt-get at a time: concurrent installs fight over the dpkg lock.
let queue: Promise<unknown> = Promise.resolve();

/**
 * Installs a Debian package with apt-get when running as root; otherwise (or without apt-get)
 * throws with `advice`, which tells the user how to install it themselves.
 */
export function aptInstall(pkg: string, advice: string, log: LogFn): Promise<void> {
  const run = queue.then(async () => {
    const aptGet = await findOnPath('apt-get');
    if (process.getuid?.() !== 0 || aptGet === undefined) {
      throw new Error(`${pkg} is not installed. ${advice}`);
    }
    log(`${pkg} not found; installing it with apt-get (running as root)`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    try {
      await execFileAsync(aptGet, ['update'], { env, maxBuffer: 32 * 1024 * 1024 });
      await execFileAsync(aptGet, ['install', '-y', '--no-install-recommends', pkg], {
        env,
        maxBuffer: 32 * 1024 * 1024,
      });
    } catch (err) {
      const out = err as { stderr?: string };
      throw new Error(
        `apt-get could not install ${pkg}: ${errorMessage(err)}\n${out.stderr ?? ''}\n${advice}`,
      );
    }
  });
  queue = run.catch(() => undefined);
  return run;
}
