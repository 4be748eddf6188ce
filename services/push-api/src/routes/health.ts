import type { Express, Request, Response } from 'express';
import type { Redis } from 'ioredis';
import type { Admin } from '@pushline/kafka';
import type { Registry } from '@pushline/telemetry';

export interface DependencyCheck {
  readonly ok: boolean;
  readonly latencyMs: number;
  readonly error?: string;
}

export interface Readiness {
  readonly ok: boolean;
  readonly draining: boolean;
  readonly checks: { readonly kafka: DependencyCheck; readonly redis: DependencyCheck };
}

export interface ReadinessProbeOptions {
  readonly admin: () => Admin | undefined;
  readonly redis: Redis;
  /** The topic the API produces to; ready means it exists. */
  readonly pushRequestsTopic: string;
  readonly timeoutMs: number;
  readonly draining: () => boolean;
}

/** Kafka (metadata round trip, topic present) and Redis (PING), each bounded by the timeout. */
export async function probeReadiness(o: ReadinessProbeOptions): Promise<Readiness> {
  const [kafka, redis] = await Promise.all([
    timed(o.timeoutMs, async () => {
      const admin = o.admin();
      if (!admin) throw new Error('not started');
      const topics = await admin.listTopics();
      if (!topics.includes(o.pushRequestsTopic)) throw new Error(`topic ${o.pushRequestsTopic} is missing`);
    }),
    timed(o.timeoutMs, async () => {
      const pong = await o.redis.ping();
      if (pong !== 'PONG') throw new Error(`unexpected PING answer ${pong}`);
    }),
  ]);
  const draining = o.draining();
  return { ok: kafka.ok && redis.ok && !draining, draining, checks: { kafka, redis } };
}

async function timed(timeoutMs: number, check: () => Promise<void>): Promise<DependencyCheck> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return { ok: true, latencyMs: Math.round(performance.now() - started) };
  } catch (err) {
    return {
      ok: false,
      latencyMs: Math.round(performance.now() - started),
      error: err instanceof Error ? err.message : String(err),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** `/healthz`, `/readyz` and `/metrics`: unauthenticated, outside /v1, for orchestrators and Prometheus. */
export function registerHealthRoutes(
  app: Express,
  options: { readonly ready: () => Promise<Readiness>; readonly metrics: Registry },
): void {
  app.get('/healthz', (_req: Request, res: Response) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req: Request, res: Response) => {
    const readiness = await options.ready();
    res.status(readiness.ok ? 200 : 503).json({
      status: readiness.ok ? 'ready' : readiness.draining ? 'draining' : 'not_ready',
      checks: readiness.checks,
    });
  });
  app.get('/metrics', async (_req: Request, res: Response) => {
    const body = await options.metrics.metrics();
    res.type(options.metrics.contentType).send(body);
  });
}
