import type { Express, Request, Response } from 'express';
import type { RedisClient } from '@pushline/registry';
import type { Admin } from '@pushline/kafka';
import type { Logger } from '@pushline/telemetry';

/** One dependency's check. Why it failed goes to the log, never into the answer. */
interface DependencyCheck {
  readonly ok: boolean;
  readonly latencyMs: number;
}

export interface Readiness {
  readonly ok: boolean;
  readonly draining: boolean;
  readonly checks: { readonly kafka: DependencyCheck; readonly redis: DependencyCheck };
}

export interface ReadinessProbeOptions {
  readonly admin: () => Admin | undefined;
  readonly redis: RedisClient;
  /** The topic the API produces to; ready means it exists. */
  readonly pushRequestsTopic: string;
  readonly timeoutMs: number;
  readonly draining: () => boolean;
  /** Where a failed check's reason is logged. */
  readonly logger: Logger;
}

/** Kafka (metadata round trip, topic present) and Redis (PING), each bounded by the timeout. */
export async function probeReadiness(o: ReadinessProbeOptions): Promise<Readiness> {
  const [kafka, redis] = await Promise.all([
    timed('kafka', o, async () => {
      const admin = o.admin();
      if (!admin) throw new Error('not started');
      const topics = await admin.listTopics();
      if (!topics.includes(o.pushRequestsTopic)) throw new Error(`topic ${o.pushRequestsTopic} is missing`);
    }),
    timed('redis', o, async () => {
      const pong = await o.redis.ping();
      if (pong !== 'PONG') throw new Error(`unexpected PING answer ${pong}`);
    }),
  ]);
  const draining = o.draining();
  return { ok: kafka.ok && redis.ok && !draining, draining, checks: { kafka, redis } };
}

async function timed(
  name: string,
  o: { readonly timeoutMs: number; readonly logger: Logger },
  check: () => Promise<void>,
): Promise<DependencyCheck> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${o.timeoutMs} ms`)), o.timeoutMs);
      }),
    ]);
    return { ok: true, latencyMs: Math.round(performance.now() - started) };
  } catch (err) {
    o.logger.warn({ err, dependency: name }, 'readiness check failed');
    return { ok: false, latencyMs: Math.round(performance.now() - started) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The readiness answer, probed at most once per `ttlMs` however often it is asked (a load
 * balancer or an attacker polling /readyz costs the dependencies one check a second), and shared
 * by the callers that ask while a probe runs.
 */
export function cachedReadiness(probe: () => Promise<Readiness>, ttlMs: number): () => Promise<Readiness> {
  let cached: { readonly at: number; readonly value: Promise<Readiness> } | undefined;
  return () => {
    const now = performance.now();
    if (!cached || now - cached.at >= ttlMs) {
      const value = probe();
      const entry = { at: now, value };
      cached = entry;
      // A probe that throws is not kept: the next call probes again.
      value.catch(() => {
        if (cached === entry) cached = undefined;
      });
    }
    return cached.value;
  };
}

/** Liveness on the public API, for load balancers: no dependency is touched. */
export const PUBLIC_HEALTH_PATH = '/healthz';

export function registerPublicHealthRoute(app: Express): void {
  app.get(PUBLIC_HEALTH_PATH, (_req: Request, res: Response) => {
    res.json({ status: 'ok' });
  });
}
