import { fork, type ChildProcess } from 'node:child_process';
import { z } from 'zod';

/**
 * Request/reply over the Node IPC channel between the bench driver and its load generators.
 * Each generator is its own process, so its sockets count against its own open-files limit and
 * its CPU is not charged to the driver.
 */

const Request = z.object({ seq: z.number().int(), cmd: z.string(), args: z.unknown() });
const Reply = z.union([
  z.object({ seq: z.number().int(), ok: z.literal(true), result: z.unknown() }),
  z.object({ seq: z.number().int(), ok: z.literal(false), error: z.string() }),
]);

class GeneratorError extends Error {
  override readonly name = 'GeneratorError';
}

/** Parent side: a forked generator process that answers commands. */
export class GeneratorProcess {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #seq = 0;
  #exited: Promise<void>;
  readonly name: string;

  constructor(name: string, script: URL, env: NodeJS.ProcessEnv = process.env) {
    this.name = name;
    this.#child = fork(script, [], { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#child.on('message', (raw) => {
      const parsed = Reply.safeParse(raw);
      if (!parsed.success) return;
      const waiter = this.#pending.get(parsed.data.seq);
      if (!waiter) return;
      this.#pending.delete(parsed.data.seq);
      if (parsed.data.ok) waiter.resolve(parsed.data.result);
      else waiter.reject(new GeneratorError(`${name}: ${parsed.data.error}`));
    });
    this.#exited = new Promise((resolve) => {
      this.#child.once('exit', (code, signal) => {
        for (const waiter of this.#pending.values()) {
          waiter.reject(new GeneratorError(`${name} exited (code ${code}, signal ${signal})`));
        }
        this.#pending.clear();
        resolve();
      });
    });
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Sends a command and resolves with the generator's answer, parsed by `schema`. */
  async request<T>(cmd: string, args: unknown, schema: z.ZodType<T>, timeoutMs: number): Promise<T> {
    const seq = ++this.#seq;
    const answer = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(seq, { resolve, reject });
    });
    this.#child.send({ seq, cmd, args });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new GeneratorError(`${this.name}: '${cmd}' took longer than ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      return schema.parse(await Promise.race([answer, timeout]));
    } finally {
      clearTimeout(timer);
      this.#pending.delete(seq);
    }
  }

  /** Asks the generator to exit; kills it if it does not within `graceMs`. */
  async close(graceMs = 5000): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    if (this.#child.connected) this.#child.disconnect();
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), graceMs);
    await this.#exited;
    clearTimeout(timer);
  }
}

export type Handler = (args: unknown) => Promise<unknown>;

/**
 * Child side: answers commands until the parent disconnects, then runs `onClose` and exits.
 * Exiting on disconnect means a crashed driver never leaves generators behind.
 */
export function serveCommands(handlers: Record<string, Handler>, onClose: () => Promise<void>): void {
  const send = process.send?.bind(process);
  if (!send) throw new Error('a load generator must be started with an IPC channel (child_process.fork)');
  process.on('message', (raw) => {
    const parsed = Request.safeParse(raw);
    if (!parsed.success) return;
    const { seq, cmd, args } = parsed.data;
    const handler = handlers[cmd];
    if (!handler) {
      send({ seq, ok: false, error: `unknown command ${cmd}` });
      return;
    }
    handler(args).then(
      (result) => send({ seq, ok: true, result }),
      (err: unknown) => send({ seq, ok: false, error: err instanceof Error ? err.message : String(err) }),
    );
  });
  process.once('disconnect', () => {
    onClose().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
