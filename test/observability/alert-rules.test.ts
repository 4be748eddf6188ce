import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { ensurePrometheus, type PrometheusTools } from '@pushline/devstack';

/**
 * The alert rules are checked by Prometheus' own tool, from Debian's `prometheus` package:
 * `promtool check rules` parses them, and `promtool test rules` runs deploy/prometheus/alerts.test.yml,
 * where every alert has a fault that must fire it and a healthy platform where it must stay silent.
 */

const execFileAsync = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');
const prometheusDir = join(root, 'deploy', 'prometheus');

interface AlertRule {
  alert?: string;
  expr: string;
}
interface RuleTest {
  alertname: string;
  exp_alerts?: unknown[];
}
interface TestGroup {
  name: string;
  alert_rule_test?: RuleTest[];
}

const rules = parse(readFileSync(join(prometheusDir, 'alerts.yml'), 'utf8')) as {
  groups: { rules: AlertRule[] }[];
};
const tests = parse(readFileSync(join(prometheusDir, 'alerts.test.yml'), 'utf8')) as {
  rule_files: string[];
  tests: TestGroup[];
};
const alertNames = rules.groups.flatMap((g) => g.rules.flatMap((r) => (r.alert ? [r.alert] : [])));

let tools: PrometheusTools;
let scratch: string;

before(async () => {
  tools = await ensurePrometheus();
  scratch = mkdtempSync(join(tmpdir(), 'pushline-promtool-'));
});
after(() => rmSync(scratch, { recursive: true, force: true }));

async function promtool(...args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await execFileAsync(tools.promtool, args, { cwd: prometheusDir });
    return `${stdout}${stderr}`;
  } catch (err) {
    const out = err as { stdout?: string; stderr?: string };
    assert.fail(`promtool ${args.join(' ')} failed:\n${out.stdout ?? ''}${out.stderr ?? ''}`);
  }
}

describe('deploy/prometheus', () => {
  it('alerts.yml passes promtool check rules', async () => {
    const out = await promtool('check', 'rules', 'alerts.yml');
    assert.match(out, new RegExp(`SUCCESS: ${alertNames.length} rules found`));
  });

  it('prometheus.yml passes promtool check config (with its rule file)', async () => {
    const config = parse(readFileSync(join(prometheusDir, 'prometheus.yml'), 'utf8')) as {
      rule_files: string[];
    };
    // The compose file mounts deploy/prometheus at /etc/prometheus.
    const local = config.rule_files.map((f) => f.replace(/^\/etc\/prometheus\//, `${prometheusDir}/`));
    const file = join(scratch, 'prometheus.yml');
    writeFileSync(file, JSON.stringify({ ...config, rule_files: local }));
    await promtool('check', 'config', file);
  });

  it('every alert has a case where it fires and a healthy case where it stays silent', () => {
    assert.deepEqual(tests.rule_files, ['alerts.yml']);
    const cases = tests.tests.flatMap((g) => g.alert_rule_test ?? []);
    for (const name of alertNames) {
      const mine = cases.filter((c) => c.alertname === name);
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${name}: no test where it must fire`,
      );
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${name}: no test where it must stay silent`,
      );
    }
    const healthy = tests.tests[0];
    assert.ok(healthy && healthy.name.startsWith('healthy'), 'the first group is the healthy platform');
    const silentThere = new Set((healthy.alert_rule_test ?? []).map((c) => c.alertname));
    assert.deepEqual(
      alertNames.filter((n) => !silentThere.has(n)),
      [],
      'alerts not checked against the healthy platform',
    );
    const unknown = cases.map((c) => c.alertname).filter((n) => !alertNames.includes(n));
    assert.deepEqual(unknown, [], 'tests of alerts that do not exist');
  });

  it('alerts.test.yml passes promtool test rules', async () => {
    const out = await promtool('test', 'rules', 'alerts.test.yml');
    assert.match(out, /SUCCESS/);
  });
});
