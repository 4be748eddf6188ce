import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connectionServerEnv, parseEnv } from '@pushline/config';
import { BalancerConfigError, haproxyConfig, type BalancedServer } from '@pushline/connection-server';

const server = (name: string, env: Record<string, string> = {}): BalancedServer => ({
  name,
  host: name,
  config: parseEnv(connectionServerEnv, {
    PUSHLINE_INTERNAL_TOKEN: 'x'.repeat(32),
    PUSHLINE_AGENT_PORT: '7072',
    ...env,
  }),
});
const bind = { host: '0.0.0.0', port: 7070 };
const lines = (cfg: string) => cfg.split('\n').map((l) => l.trim());

describe('haproxyConfig', () => {
  it('balances by least connections, weighted by each server agent, with /readyz as the health check', () => {
    const cfg = haproxyConfig([server('cs-1'), server('cs-2', { PUSHLINE_PORT: '9000' })], { bind });
    const l = lines(cfg);
    assert.ok(l.includes('balance leastconn'));
    assert.ok(l.includes('option httpchk GET /readyz'));
    assert.ok(l.includes('server cs-1 cs-1:7070 check port 7071 agent-check agent-port 7072'));
    assert.ok(l.includes('server cs-2 cs-2:9000 check port 7071 agent-check agent-port 7072'));
    assert.ok(l.includes('bind 0.0.0.0:7070'));
    assert.ok(l.includes('option redispatch'));
  });

  it('derives the tunnel and handshake timeouts from the servers socket settings', () => {
    const cfg = haproxyConfig(
      [
        server('a'),
        server('b', { PUSHLINE_PING_INTERVAL_MS: '60000', PUSHLINE_HANDSHAKE_TIMEOUT_MS: '12000' }),
      ],
      { bind },
    );
    // The longest ping interval + timeout + 10 s: 60 + 20 + 10.
    assert.ok(lines(cfg).includes('timeout tunnel 90s'));
    assert.ok(lines(cfg).includes('timeout http-request 12s'));
  });

  it('resolves names at run time through Docker DNS when asked, and adds the stats page', () => {
    const cfg = haproxyConfig([server('cs-1')], {
      bind,
      stats: { host: '0.0.0.0', port: 8404 },
      dockerDns: true,
      agentInterMs: 500,
    });
    const l = lines(cfg);
    assert.ok(l.includes('nameserver dns 127.0.0.11:53'));
    assert.ok(l.some((x) => x.startsWith('server cs-1 ') && x.endsWith('resolvers docker init-addr none')));
    assert.ok(l.includes('stats uri /stats'));
    assert.ok(l.includes('http-request use-service prometheus-exporter if { path /metrics }'));
    assert.ok(l.some((x) => x.includes('agent-inter 500ms')));
  });

  it('refuses servers it cannot balance, with a clear reason', () => {
    assert.throws(() => haproxyConfig([], { bind }), BalancerConfigError);
    assert.throws(
      () => haproxyConfig([server('cs-1', { PUSHLINE_AGENT_PORT: '' })], { bind }),
      /cs-1 has no fixed PUSHLINE_AGENT_PORT/,
    );
    assert.throws(
      () => haproxyConfig([server('cs-1', { PUSHLINE_AGENT_PORT: '0' })], { bind }),
      /no fixed PUSHLINE_AGENT_PORT/,
    );
    assert.throws(() => haproxyConfig([server('cs-1', { PUSHLINE_PORT: '0' })], { bind }), /fixed ones/);
    assert.throws(() => haproxyConfig([server('cs 1')], { bind }), /not a valid HAProxy name/);
    assert.throws(() => haproxyConfig([server('a'), server('a')], { bind }), /distinct/);
  });
});
