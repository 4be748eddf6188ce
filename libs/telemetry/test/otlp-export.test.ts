import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

/**
 * The production path: nothing but standard OTEL_* variables turns tracing on, and spans leave
 * the process over OTLP with the service's resource attributes. Runs in a child process so the
 * variables never touch this one; the OTLP receiver is a plain HTTP server taking http/json.
 */

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const received: { path: string; body: unknown }[] = [];
const server = createServer((req: IncomingMessage, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    received.push({
      path: req.url ?? '',
      body: JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null'),
    });
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
});
let endpoint: string;

before(async () => {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

const script = `
import { startTracing, trace, withSpan } from '@pushline/telemetry';
const handle = startTracing({ serviceName: 'pushline-otlp-probe', instanceId: 'probe-1' });
if (!handle.enabled) throw new Error('tracing did not start from the environment');
await withSpan(trace.getTracer('pushline-probe'), 'probe span', { attributes: { 'pushline.outcome': 'delivered' } }, async () => {});
await handle.close();
`;

async function runChild(env: Record<string, string>): Promise<number | null> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    cwd: repoRoot,
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  return code;
}

interface OtlpAttribute {
  key: string;
  value: { stringValue?: string };
}

describe('startTracing from OTEL_* variables', () => {
  it('exports spans over OTLP with service name, instance id and version, and nothing else', async () => {
    const code = await runChild({
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    });
    assert.equal(code, 0);
    assert.deepEqual(
      received.map((r) => r.path),
      ['/v1/traces'],
      'traces only: metrics and logs stay on /metrics and stdout',
    );
    const body = received[0]?.body as {
      resourceSpans: {
        resource: { attributes: OtlpAttribute[] };
        scopeSpans: { scope: { name: string }; spans: { name: string }[] }[];
      }[];
    };
    const [resourceSpans] = body.resourceSpans;
    assert.ok(resourceSpans);
    const attr = (key: string) =>
      resourceSpans.resource.attributes.find((a) => a.key === key)?.value.stringValue;
    assert.equal(attr('service.name'), 'pushline-otlp-probe');
    assert.equal(attr('service.instance.id'), 'probe-1');
    assert.match(attr('service.version') ?? '', /^\d+\.\d+\.\d+/);
    const [scope] = resourceSpans.scopeSpans;
    assert.equal(scope?.scope.name, 'pushline-probe');
    assert.deepEqual(
      scope.spans.map((s) => s.name),
      ['probe span'],
    );
  });
});
