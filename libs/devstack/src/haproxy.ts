import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { ensureDebianTool } from './apt.ts';
import { spawnGuarded } from './guard.ts';
import { canConnect } from './ports.ts';
import { BindConflict, waitForReady } from './readiness.ts';
import { noLog } from './util.ts';
import type { LogFn } from './util.ts';

const execFileAsync = promisify(execFile);

export interface HaproxyInstance {
  /** The configuration it runs with. */
  readonly config: string;
  readonly configFile: string;
  /** HAProxy's own log (stdout and stderr). */
  readonly logFile: string;
  readonly pid: number;
  readonly startupMs: number;
  /** Idempotent: every call returns the same promise. */
  stop(): Promise<void>;
}

export interface StartHaproxyOptions {
  /**
   * Makes the configuration and names the port that shows HAProxy is up (a frontend it binds).
   * Called again with fresh ports if another process took one meanwhile.
   */
  readonly render: () => Promise<{ config: string; readyPort: number; readyHost?: string }>;
  /** Default: a fresh temp dir, removed again by stop(). A given dir is kept. */
  readonly workDir?: string;
  readonly log?: LogFn;
  /** Default 15 s. */
  readonly startTimeoutMs?: number;
  /** Grace after SIGTERM (HAProxy's hard stop) before SIGKILL. Default 5 s. */
  readonly stopTimeoutMs?: number;
}

const MAX_BIND_ATTEMPTS = 3;

/** Path of haproxy; as root on a Debian-like system installs it with apt-get when missing. */
export function ensureHaproxy(opts: { log?: LogFn } = {}): Promise<string> {
  return ensureDebianTool(
    {
      binary: 'haproxy',
      pkg: 'haproxy',
      wellKnown: ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy', '/opt/homebrew/bin/haproxy'],
      advice:
        'Install it (Debian/Ubuntu: sudo apt-get install -y haproxy; macOS: brew install haproxy), ' +
        'or set PUSHLINE_DEV_LOAD_BALANCER=none to connect devices to the servers directly.',
    },
    opts.log ?? noLog,
  );
}

/**
 * A real HAProxy in the foreground (`-db`), guarded like Kafka and Redis so it cannot outlive us.
 * The configuration is checked with `haproxy -c` first, so a mistake in it fails with HAProxy's
 * own message rather than a timeout.
 */
export async function startHaproxy(opts: StartHaproxyOptions): Promise<HaproxyInstance> {
  const log = opts.log ?? noLog;
  const startTimeoutMs = opts.startTimeoutMs ?? 15_000;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 5_000;
  const haproxy = await ensureHaproxy({ log });
  const started = performance.now();
  const deadline = Date.now() + startTimeoutMs;
  const ownsWorkDir = opts.workDir === undefined;
  const workDir =
    opts.workDir === undefined
      ? await mkdtemp(path.join(tmpdir(), 'pushline-haproxy-'))
      : path.resolve(opts.workDir);
  await mkdir(workDir, { recursive: true });
  const configFile = path.join(workDir, 'haproxy.cfg');
  const logFile = path.join(workDir, 'haproxy.log');

  try {
    for (let attempt = 1; ; attempt++) {
      await rm(logFile, { force: true });
      const { config, readyPort, readyHost = '127.0.0.1' } = await opts.render();
      await writeFile(configFile, config);
      try {
        await execFileAsync(haproxy, ['-c', '-q', '-f', configFile]);
      } catch (err) {
        const out = err as { stdout?: string; stderr?: string };
        throw new Error(
          `haproxy rejected its configuration ${configFile}:\n${out.stderr ?? ''}${out.stdout ?? ''}`,
          {
            cause: err,
          },
        );
      }
      const proc = await spawnGuarded({
        command: haproxy,
        args: ['-db', '-f', configFile],
        outFile: logFile,
        orphanCleanupDir: ownsWorkDir ? workDir : undefined,
        cwd: workDir,
      });
      try {
        await waitForReady({
          proc,
          name: 'haproxy',
          deadline,
          startTimeoutMs,
          logs: [logFile],
          intervalMs: 50,
          probe: async (remaining) =>
            (await canConnect(readyHost, readyPort, Math.min(1_000, remaining)))
              ? true
              : `nothing listens on ${readyHost}:${readyPort}`,
        });
      } catch (err) {
        await proc.stop(1_000);
        if (err instanceof BindConflict && attempt < MAX_BIND_ATTEMPTS) {
          log('haproxy: a port was taken meanwhile; retrying with new ports');
          continue;
        }
        throw err;
      }
      const startupMs = Math.round(performance.now() - started);
      log(`haproxy ready on ${readyHost}:${readyPort} in ${startupMs} ms (pid ${proc.pid}, log ${logFile})`);
      let stopping: Promise<void> | undefined;
      return {
        config,
        configFile,
        logFile,
        pid: proc.pid,
        startupMs,
        stop(): Promise<void> {
          stopping ??= (async () => {
            // SIGTERM is HAProxy's hard stop: it closes the proxied connections at once.
            const exit = await proc.stop(stopTimeoutMs);
            if (ownsWorkDir) await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
            log(`haproxy stopped (exit code ${exit.code}, signal ${exit.signal})`);
          })();
          return stopping;
        },
      };
    }
  } catch (err) {
    if (ownsWorkDir) await rm(workDir, { recursive: true, force: true });
    throw err;
  }
}
