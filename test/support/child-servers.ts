import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, spawnGuarded, type GuardedProcess } from '@pushline/devstack';
import { runCleanup } from '@pushline/runtime';
import { waitUntil } from '@pushline/testkit';
import type { Platform } from './platform.ts';

const root = join(import.meta.dirname, '..', '..');

/** A connection server running as its own process, so a test can SIGKILL or SIGTERM it for real. */
export interface ChildServer {
  readonly serverId: string;
  readonly deviceUrl: string;
  readonly internalUrl: string;
  readonly process: GuardedProcess;
  readonly logFile: string;
  /** kill -9: no drain, no deregistration, sockets just drop. */
  kill(): void;
  /** SIGTERM: the server drains (reconnect hints), then exits. Resolves on exit. */
  drain(): Promise<void>;
  /** SIGSTOP: the process freezes (no timer, no socket read) until `resume()`; close() resumes it too. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
}

export interface ChildServers {
  start(name: string, env?: Readonly<Record<string, string>>): Promise<ChildServer>;
  close(): Promise<void>;
}

/**
 * Connection servers as child processes of the test (each behind the devstack guardian, so none
 * outlives the run), on the platform's Kafka, Redis, prefixes and secrets.
 */
export function childServers(platform: Pick<Platform, 'prefix' | 'serviceEnv' | 'jwtSecret'>): ChildServers {
  const logDir = mkdtempSync(join(tmpdir(), 'pushline-children-'));
  const started: ChildServer[] = [];
  return {
    async start(name, env = {}) {
      const devicePort = await freePort();
      const internalPort = await freePort();
      const serverId = `${platform.prefix}-${name}`;
      const logFile = join(logDir, `${name}.log`);
      const child = await spawnGuarded({
        command: process.execPath,
        args: [
          '--disable-warning=TimeoutNegativeWarning',
          join(root, 'services', 'connection-server', 'src', 'main.ts'),
        ],
        outFile: logFile,
        cwd: root,
        env: {
          PATH: process.env['PATH'] ?? '',
          ...platform.serviceEnv,
          PUSHLINE_LOG_LEVEL: process.env['PUSHLINE_TEST_LOG'] ?? 'warn',
          PUSHLINE_SERVER_ID: serverId,
          PUSHLINE_HOST: '127.0.0.1',
          PUSHLINE_PORT: String(devicePort),
          PUSHLINE_INTERNAL_PORT: String(internalPort),
          PUSHLINE_DEVICE_JWT_SECRET: platform.jwtSecret,
          PUSHLINE_CLOSE_GRACE_MS: '100',
          PUSHLINE_DRAIN_WINDOW_MS: '300',
          // Traced, so a device's traceparent continues the caller's trace; spans go to the log.
          OTEL_TRACES_EXPORTER: 'console',
          ...env,
        },
      });
      const internalUrl = `http://127.0.0.1:${internalPort}`;
      const server: ChildServer = {
        serverId,
        deviceUrl: `http://127.0.0.1:${devicePort}`,
        internalUrl,
        process: child,
        logFile,
        kill: () => process.kill(child.pid, 'SIGKILL'),
        pause: () => process.kill(child.pid, 'SIGSTOP'),
        resume: () => process.kill(child.pid, 'SIGCONT'),
        drain: async () => {
          await child.stop(15_000);
        },
      };
      // Owned from the spawn on: one that never gets ready is still stopped by close(), or it
      // would keep the test process alive.
      started.push(server);
      let gone = false;
      void child.exited.then(() => (gone = true));
      await waitUntil(
        async () => {
          if (gone) throw new Error(`${name} exited during start-up; see ${logFile}`);
          return fetch(`${internalUrl}/readyz`).then(
            (res) => res.ok,
            () => false,
          );
        },
        { timeoutMs: 30_000, intervalMs: 50, what: `${name} ready` },
      );
      return server;
    },
    close: () =>
      runCleanup(
        started.map((s) => ({
          name: s.serverId,
          run: async () => {
            // A paused server would handle the SIGTERM only once resumed (or die by the SIGKILL).
            if (!s.process.exitInfo()) resumeQuietly(s.process.pid);
            await s.process.stop(5_000);
          },
        })),
      ),
  };
}

/** SIGCONT to a process that may have exited meanwhile. */
function resumeQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    // Gone already: nothing to resume.
  }
}
