/**
 * Load generator process for HTTP pushes: a closed loop of `concurrency` workers over keep-alive
 * connections, for a fixed time. node:http instead of fetch, because fetch's per-request
 * overhead in this process would be taken from the server under test on a 2-core machine.
 */
import { Agent, request } from 'node:http';
import { serveCommands } from './ipc.ts';
import { HttpLoadArgs, type HttpLoadResult } from './http-protocol.ts';
import { increment } from './pool.ts';
import { SampleReservoir, nowMs } from '../stats.ts';

interface Response {
  readonly status: number;
  readonly body: string;
}

function post(agent: Agent, url: URL, headers: Record<string, string>, body: string, timeoutMs: number) {
  return new Promise<Response>((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent,
        headers: {
          ...headers,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

function classify(res: Response): string {
  try {
    const parsed: unknown = JSON.parse(res.body);
    if (typeof parsed === 'object' && parsed !== null && 'outcome' in parsed) {
      return String((parsed as { outcome: unknown }).outcome);
    }
  } catch {
    // not JSON: fall back to the status code
  }
  return `status:${res.status}`;
}

async function run(raw: unknown): Promise<HttpLoadResult> {
  const args = HttpLoadArgs.parse(raw);
  const agent = new Agent({ keepAlive: true, maxSockets: args.concurrency });
  const outcomes: Record<string, number> = {};
  const samples = new SampleReservoir(200_000);
  const started = nowMs();
  const measureFrom = started + args.warmupMs;
  const end = measureFrom + args.durationMs;
  let next = 0;
  let requests = 0;
  let total = 0;

  const worker = async (w: number): Promise<void> => {
    while (nowMs() < end) {
      const device = args.deviceIds[next++ % args.deviceIds.length] as string;
      const id = `h${process.pid}-${w}-${next}`;
      const t0 = nowMs();
      const fill = (s: string) =>
        s.replaceAll('{device}', device).replaceAll('{id}', id).replaceAll('{t0}', String(t0));
      let outcome: string;
      try {
        const res = await post(
          agent,
          new URL(fill(args.pathTemplate), args.baseUrl),
          args.headers,
          fill(args.bodyTemplate),
          args.timeoutMs,
        );
        outcome = classify(res);
      } catch (err) {
        outcome = `error:${err instanceof Error ? err.message : String(err)}`;
      }
      const t1 = nowMs();
      total++;
      if (t0 < measureFrom || t1 > end) continue;
      requests++;
      increment(outcomes, outcome);
      if (outcome === 'delivered') samples.add(t1 - t0);
    }
  };
  await Promise.all(Array.from({ length: args.concurrency }, (_, w) => worker(w)));
  agent.destroy();
  return { requests, total, ms: args.durationMs, outcomes, latencies: samples.values() };
}

serveCommands({ run }, () => Promise.resolve());
