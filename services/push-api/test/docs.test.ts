import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import type { ConnectionServer } from '@pushline/connection-server';
import { PROBLEM_TYPE_BASE } from '../src/index.ts';
import { call } from './harness.ts';
import { startPlatform, type Platform } from './platform.ts';

const run = promisify(execFile);
const API_MD = fileURLToPath(new URL('../../../docs/api.md', import.meta.url));

/** The curl commands of docs/api.md's `## curl examples` section, one per bash block. */
function curlExamples(): string[] {
  const text = readFileSync(API_MD, 'utf8');
  const start = text.indexOf('\n## curl examples');
  assert.ok(start >= 0, 'docs/api.md has a "## curl examples" section');
  const end = text.indexOf('\n## ', start + 1);
  const section = text.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```bash\n([\s\S]*?)```/g)]
    .map((m) => (m[1] ?? '').trim())
    .filter((block) => block.startsWith('curl '));
}

describe('docs/api.md', () => {
  let p: Platform;
  before(async () => {
    p = await startPlatform('docs');
    const [A] = p.servers as [ConnectionServer];
    const d1 = await p.connect(A, 'd1', 'u1', 'ack', { topics: ['news'] });
    assert.deepEqual(await d1.request('subscribe', { topic: 'news' }), { ok: true, topic: 'news' });
  });
  after(() => p.close());

  it('has a working curl for every endpoint, run as written against a live platform', async () => {
    const examples = curlExamples();
    const doc = (await call(p.h.url, 'GET', '/v1/openapi.json')).body as {
      paths: Record<string, Record<string, unknown>>;
    };
    const endpoints = [
      ...Object.entries(doc.paths).flatMap(([path, item]) =>
        Object.keys(item).map((m) => `${m.toUpperCase()} ${path}`),
      ),
      'GET /healthz',
      'GET /readyz',
      'GET /metrics',
    ];
    const covered = new Set<string>();
    for (const example of examples) {
      const { stdout } = await run('bash', ['-c', example], {
        env: {
          PATH: process.env['PATH'] ?? '',
          PUSHLINE_API: p.h.url,
          PUSHLINE_API_OPS: p.h.opsUrl,
          PUSHLINE_API_KEY: p.h.keys.admin,
        },
      });
      assert.ok(stdout.length > 0, `no output from: ${example}`);
      if (!example.includes('/metrics')) {
        const body = JSON.parse(stdout) as { type?: unknown; outcome?: unknown };
        assert.ok(
          !(typeof body.type === 'string' && body.type.startsWith(PROBLEM_TYPE_BASE)),
          `${example}\n→ ${stdout}`,
        );
        if (example.includes('/v1/devices/d1/messages')) assert.equal(body.outcome, 'delivered', stdout);
      }
      const method = /-X (POST|GET)/.exec(example)?.[1] ?? 'GET';
      const path = /\$PUSHLINE_API(?:_OPS)?(\/[^"?]*)/.exec(example)?.[1] ?? '';
      const template = endpoints.find((e) => {
        const [m, t] = e.split(' ') as [string, string];
        return m === method && new RegExp(`^${t.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(path);
      });
      assert.ok(template, `${method} ${path} is a documented endpoint`);
      covered.add(template);
    }
    assert.deepEqual([...covered].sort(), [...endpoints].sort());
  });
});
