import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ensureDebianTool } from './apt.ts';
import { spawnGuarded } from './guard.ts';
import { freePort } from './ports.ts';
import { BindConflict, waitForReady } from './readiness.ts';
import { noLog } from './util.ts';
import type { LogFn } from './util.ts';

/** The two binaries of Debian's `prometheus` package. */
export interface PrometheusTools {
  readonly prometheus: string;
  readonly promtool: string;
}

const HOST = '127.0.0.1';
const MAX_BIND_ATTEMPTS = 3;
const ADVICE =
  'Install it (Debian/Ubuntu: sudo apt-get install -y prometheus, which brings promtool; elsewhere: ' +
  'the prometheus release tarball on PATH).';

/**
 * Paths of prometheus and promtool (both from Debian's `prometheus` package); as root on a
 * Debian-like system installs the package when they are missing (its service is not started: we
 * run our own instances).
 */
export async function ensurePrometheus(opts: { log?: LogFn } = {}): Promise<PrometheusTools> {
  const log = opts.log ?? noLog;
  const tool = (binary: string) =>
    ensureDebianTool({ binary, pkg: 'prometheus', wellKnown: [`/usr/bin/${binary}`], advice: ADVICE }, log);
  // One after the other: the first installs the package that brings the second.
  const prometheus = await tool('prometheus');
  const promtool = await tool('promtool');
  return { prometheus, promtool };
}

export interface StartPrometheusOptions {
  /**
   * prometheus.yml without `rule_files`; the rule files given below are added. Scrape targets
   * are the caller's (e.g. services on free ports).
   */
  readonly config: Readonly<Record<string, unknown>>;
  /** Rule files by name, written next to the config and loaded. */
  readonly ruleFiles?: Readonly<Record<string, string>>;
  readonly log?: LogFn;
  /** Default 30 s. */
  readonly startTimeoutMs?: number;
}

export interface PrometheusInstance {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  readonly pid: number;
  readonly workDir: string;
  readonly logFile: string;
  /** Idempotent. Removes the work dir (config and TSDB). */
  stop(): Promise<void>;
}

/**
 * A real Prometheus server on a free loopback port with its own config and a throwaway TSDB,
 * as a guarded child process (no orphan even if the caller is SIGKILLed). For tests that check
 * dashboards and rules against what Prometheus itself makes of the platform's metrics.
 */
export async function startPrometheus(opts: StartPrometheusOptions): Promise<PrometheusInstance> {
  const log = opts.log ?? noLog;
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const { prometheus } = await ensurePrometheus({ log });
  const started = performance.now();
  const deadline = Date.now() + startTimeoutMs;
  const workDir = await mkdtemp(path.join(tmpdir(), 'pushline-prometheus-'));
  try {
    const ruleFiles: string[] = [];
    for (const [name, text] of Object.entries(opts.ruleFiles ?? {})) {
      const file = path.join(workDir, name);
      await writeFile(file, text);
      ruleFiles.push(file);
    }
    const configFile = path.join(workDir, 'prometheus.yml');
    // JSON is YAML, so no YAML library is needed to write the config.
    await writeFile(configFile, JSON.stringify({ ...opts.config, rule_files: ruleFiles }, null, 2));
    const logFile = path.join(workDir, 'prometheus.log');
    for (let attempt = 1; ; attempt++) {
      await rm(logFile, { force: true });
      const dataDir = path.join(workDir, `data-${attempt}`);
      await mkdir(dataDir);
      const port = await freePort(HOST);
      const proc = await spawnGuarded({
        command: prometheus,
        args: [
          `--config.file=${configFile}`,
          `--storage.tsdb.path=${dataDir}`,
          `--web.listen-address=${HOST}:${port}`,
          '--log.level=warn',
        ],
        outFile: logFile,
        orphanCleanupDir: workDir,
        cwd: workDir,
      });
      const url = `http://${HOST}:${port}`;
      try {
        await waitForReady({
          proc,
          name: 'prometheus',
          deadline,
          startTimeoutMs,
          logs: [logFile],
          intervalMs: 100,
          probe: async (remaining) => {
            const res = await fetch(`${url}/-/ready`, {
              signal: AbortSignal.timeout(Math.min(1_000, remaining)),
            });
            return res.ok ? true : `status ${res.status}`;
          },
        });
      } catch (err) {
        await proc.stop(2_000);
        if (err instanceof BindConflict && attempt < MAX_BIND_ATTEMPTS) {
          log(`prometheus: port ${port} was taken meanwhile; retrying with a new port`);
          continue;
        }
        throw err;
      }
      log(`prometheus ready at ${url} in ${Math.round(performance.now() - started)} ms (pid ${proc.pid})`);
      let stopping: Promise<void> | undefined;
      return {
        url,
        pid: proc.pid,
        workDir,
        logFile,
        stop(): Promise<void> {
          stopping ??= (async () => {
            await proc.stop(10_000);
            await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
          })();
          return stopping;
        },
      };
    }
  } catch (err) {
    await rm(workDir, { recursive: true, force: true });
    throw err;
  }
}
