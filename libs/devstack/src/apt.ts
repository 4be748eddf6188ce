import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { promisify } from 'node:util';
import { errorMessage, findOnPath, noLog } from './util.ts';
import type { LogFn } from './util.ts';

const execFileAsync = promisify(execFile);

export interface DebianTool {
  /** Executable name, e.g. 'redis-server'. */
  readonly binary: string;
  /** Debian package that installs it. */
  readonly pkg: string;
  /** Places to look when it is not on PATH (/usr/sbin is not on every PATH). */
  readonly wellKnown: readonly string[];
  /** What a person can do instead, appended to every error. */
  readonly advice: string;
}

async function find(tool: DebianTool): Promise<string | undefined> {
  const onPath = await findOnPath(tool.binary);
  if (onPath !== undefined) return onPath;
  for (const candidate of tool.wellKnown) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

// One apt-get at a time in this process: concurrent installs fight over the dpkg lock.
let aptQueue: Promise<unknown> = Promise.resolve();

/** Path of the tool; as root on a Debian-like system installs its package with apt-get when missing. */
export async function ensureDebianTool(tool: DebianTool, log: LogFn = noLog): Promise<string> {
  const found = await find(tool);
  if (found !== undefined) return found;
  const run = aptQueue.then(async () => (await find(tool)) ?? installWithApt(tool, log));
  aptQueue = run.catch(() => undefined);
  return run;
}

async function installWithApt(tool: DebianTool, log: LogFn): Promise<string> {
  const aptGet = await findOnPath('apt-get');
  if (process.getuid?.() !== 0 || aptGet === undefined) {
    throw new Error(`${tool.binary} was not found on PATH. ${tool.advice}`);
  }
  log(`${tool.binary} not found; installing ${tool.pkg} with apt-get (running as root)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    await execFileAsync(aptGet, ['update'], { env, maxBuffer: 32 * 1024 * 1024 });
    await execFileAsync(aptGet, ['install', '-y', '--no-install-recommends', tool.pkg], {
      env,
      maxBuffer: 32 * 1024 * 1024,
    });
  } catch (err) {
    const out = err as { stderr?: string };
    throw new Error(
      `apt-get could not install ${tool.pkg}: ${errorMessage(err)}\n${out.stderr ?? ''}\n${tool.advice}`,
    );
  }
  const found = await find(tool);
  if (found === undefined)
    throw new Error(`apt-get installed ${tool.pkg} but ${tool.binary} is still not found. ${tool.advice}`);
  log(`installed ${found}`);
  return found;
}
