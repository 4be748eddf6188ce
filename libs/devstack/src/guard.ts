import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface GuardedProcess {
  /** pid of the real server process (java, redis-server), not of the guardian. */
  readonly pid: number;
  readonly guardianPid: number;
  readonly exited: Promise<ExitInfo>;
  exitInfo(): ExitInfo | undefined;
  /** SIGTERM, then SIGKILL after `killAfterMs`; resolves once the guardian (and so the server) has exited. */
  stop(killAfterMs: number): Promise<ExitInfo>;
  /** Sends the server a SIGTERM (through the guardian) now, also while a stop() is under way. */
  terminate(): void;
}

/*
 * The guardian is a small bash process between us and the server. Its stdin is a pipe from this
 * Node process that nobody writes to, so it reads EOF exactly when we die, however we die (SIGKILL
 * included); a watcher then stops the server (SIGTERM, SIGKILL after 10 s). Signals sent to the
 * guardian are forwarded to the server, and where setpriv exists the server also gets
 * PR_SET_PDEATHSIG, in case the guardian itself is SIGKILLed. If we died and the server ran in a
 * temp dir we created, the guardian removes that dir too, since nobody else is left to do it.
 * Details that matter:
 * - the watcher exists before the pid is printed, and SIGPIPE is ignored only once the server has
 *   started (so the server does not inherit it): a parent dying right then cannot take the
 *   guardian down before anything watches the server;
 * - when we are gone the watcher is awaited, not killed: killing it mid-`sleep` would leave a
 *   zombie wherever PID 1 does not reap (some containers and microVMs).
 * - the guardian leads its own process group (and session): a terminal's Ctrl-C reaches the
 *   process that started it, which stops its servers in order, rather than every server at once
 *   (a service would take the terminal's SIGINT and the guardian's SIGTERM after it as a second
 *   signal, which means "exit now", and skip its drain).
 * Argv: $1 = dir to remove when orphaned ('' for none), $2.. = the command.
 * stdout carries one line, the server pid; the server's own output goes to the guardian's stderr.
 */
const GUARDIAN_SCRIPT = `
set -u
cleanup=$1; shift
exec 3<&0 </dev/null
c=
stopping=0
trap 'stopping=1; [ -n "$c" ] && kill -TERM "$c" 2>/dev/null' TERM INT HUP
pd=()
if command -v setpriv >/dev/null 2>&1; then pd=(setpriv --pdeathsig TERM --); fi
"\${pd[@]}" "$@" >&2 3<&- &
c=$!
(
  read -r -u 3 _ || true
  kill -TERM "$c" 2>/dev/null || exit 0
  i=0
  while kill -0 "$c" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "$c" 2>/dev/null
) >/dev/null 2>&1 &
w=$!
trap '' PIPE
printf '%s\\n' "$c" 2>/dev/null
exec 1>/dev/null
[ "$stopping" = 1 ] && kill -TERM "$c" 2>/dev/null
rc=0
while :; do
  wait "$c"; rc=$?
  kill -0 "$c" 2>/dev/null || break
done
if read -r -t 0 -u 3; then
  wait "$w"
  [ -n "$cleanup" ] && rm -rf -- "$cleanup"
else
  kill "$w" 2>/dev/null
fi
exit "$rc"
`;

export interface SpawnGuardedOptions {
  readonly command: string;
  readonly args: readonly string[];
  /** Receives the server's stdout and stderr (appended). */
  readonly outFile: string;
  /** Removed by the guardian only if this Node process dies while the server runs. */
  readonly orphanCleanupDir?: string | undefined;
  readonly cwd?: string | undefined;
  readonly env?: NodeJS.ProcessEnv | undefined;
  readonly spawnTimeoutMs?: number | undefined;
}

export async function spawnGuarded(opts: SpawnGuardedOptions): Promise<GuardedProcess> {
  const outFd = openSync(opts.outFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(
      'bash',
      ['-c', GUARDIAN_SCRIPT, 'pushline-guard', opts.orphanCleanupDir ?? '', opts.command, ...opts.args],
      { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', outFd], detached: true },
    );
  } finally {
    closeSync(outFd);
  }

  let exitInfo: ExitInfo | undefined;
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  // Nothing is ever written to the guardian's stdin; an EPIPE there must not crash us.
  child.stdin?.on('error', () => {});

  const pid = await readPidLine(child, exited, opts.spawnTimeoutMs ?? 10_000);
  const guardianPid = child.pid;
  if (guardianPid === undefined) throw new Error('guardian has no pid');

  let stopping: Promise<ExitInfo> | undefined;
  return {
    pid,
    guardianPid,
    exited,
    exitInfo: () => exitInfo,
    terminate(): void {
      if (exitInfo === undefined) child.kill('SIGTERM');
    },
    stop(killAfterMs: number): Promise<ExitInfo> {
      if (stopping !== undefined) return stopping;
      if (exitInfo !== undefined) return (stopping = exited);
      child.kill('SIGTERM');
      let lastResort: NodeJS.Timeout | undefined;
      const escalate = setTimeout(() => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
        // The guardian exits as soon as its child is reaped; this only covers a wedged guardian.
        lastResort = setTimeout(() => child.kill('SIGKILL'), 5_000);
      }, killAfterMs);
      stopping = exited.finally(() => {
        clearTimeout(escalate);
        if (lastResort !== undefined) clearTimeout(lastResort);
      });
      return stopping;
    },
  };
}

function readPidLine(child: ChildProcess, exited: Promise<ExitInfo>, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const stdout = child.stdout;
    if (stdout === null) {
      reject(new Error('guardian has no stdout'));
      return;
    }
    let text = '';
    const cleanup = (): void => {
      clearTimeout(timer);
      stdout.off('data', onData);
      child.off('error', onError);
    };
    const onData = (chunk: Buffer): void => {
      text += chunk.toString('utf8');
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      cleanup();
      const pid = Number(text.slice(0, nl));
      if (Number.isInteger(pid) && pid > 0) resolve(pid);
      else reject(new Error(`guardian printed ${JSON.stringify(text.slice(0, nl))} instead of a pid`));
      stdout.resume();
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(new Error(`could not start bash guardian: ${err.message}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      child.kill('SIGKILL');
      reject(new Error(`guardian did not report a pid within ${timeoutMs} ms`));
    }, timeoutMs);
    stdout.on('data', onData);
    child.once('error', onError);
    void exited.then((info) => {
      cleanup();
      reject(new Error(`guardian exited before reporting a pid (code ${info.code}, signal ${info.signal})`));
    });
  });
}
