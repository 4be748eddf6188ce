import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { parse, parseAllDocuments } from 'yaml';
import { describeEnv, parseEnv, serviceEnvSchemas, type EnvSchema } from '@pushline/config';
import {
  K8S_BASE,
  K8S_SECRET,
  K8S_SECRET_KEYS,
  K8S_SERVICES,
  k8sEnvFile,
  parseEnvFile,
  renderK8sEnvFile,
  type K8sService,
} from '../scripts/lib/k8s-config.ts';

/**
 * deploy/k8s cannot be applied here (no cluster), so this holds it to the code: the ConfigMaps come
 * from the config schemas, every variable a Deployment sets exists in its service's schema and
 * parses, probes point at the real ops port and paths, every Deployment has a Service, a
 * PodDisruptionBudget and a preStop drain, the HPA scales on a metric the servers export, and
 * kustomize (a real one: kustomize v5 or `kubectl kustomize`) builds it with every reference
 * resolved.
 */

const root = join(import.meta.dirname, '..');
const read = (path: string) => readFileSync(join(root, path), 'utf8');
const run = promisify(execFile);

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
}
interface EnvEntry {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } };
}
interface Container {
  name: string;
  command: string[];
  ports: { name: string; containerPort: number }[];
  env?: EnvEntry[];
  envFrom?: { configMapRef?: { name: string } }[];
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
}
interface PodSpec {
  terminationGracePeriodSeconds?: number;
  containers: Container[];
}
interface Deployment extends K8sObject {
  spec: {
    selector: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
  };
}

const kustomization = parse(read(`${K8S_BASE}/kustomization.yaml`)) as { resources: string[] };
const objects: K8sObject[] = kustomization.resources.flatMap((file) =>
  parseAllDocuments(read(`${K8S_BASE}/${file}`)).map((d) => d.toJS() as K8sObject),
);
const ofKind = <T extends K8sObject>(kind: string) => objects.filter((o) => o.kind === kind) as T[];
const deployment = (service: K8sService) => {
  const d = ofKind<Deployment>('Deployment').find((o) => o.metadata.name === service);
  assert.ok(d, `a Deployment ${service}`);
  return d;
};
const container = (d: Deployment) => {
  const [c, ...rest] = d.spec.template.spec.containers;
  assert.ok(c && rest.length === 0, `${d.metadata.name} runs one container`);
  return c;
};
const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

/** The variable holding the port each service's /readyz, /healthz and /metrics answer on. */
const OPS_PORT: Record<K8sService, string> = {
  'connection-server': 'PUSHLINE_INTERNAL_PORT',
  'message-processor': 'PUSHLINE_PROCESSOR_PORT',
  'push-api': 'PUSHLINE_API_PORT',
  console: 'PUSHLINE_CONSOLE_PORT',
};
/** Where each service's /readyz and /healthz are served from. */
const HEALTH_SOURCE: Record<K8sService, string> = {
  'connection-server': 'libs/runtime/src/ops-server.ts',
  'message-processor': 'libs/runtime/src/ops-server.ts',
  'push-api': 'libs/runtime/src/ops-server.ts',
  console: 'services/console/src/app.ts',
};

/** The environment a pod of `service` gets: its ConfigMap, then its own env (secrets and pod fields filled in). */
function podEnv(service: K8sService): Record<string, string> {
  const c = container(deployment(service));
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    const name = from.configMapRef?.name;
    assert.equal(name, `${service}-config`, `${service} reads its generated ConfigMap`);
    Object.assign(env, parseEnvFile(read(k8sEnvFile(service))));
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined)
      env[e.name] = e.value.replace(/\$\(([A-Z_]+)\)/g, (_m, v: string) => env[v] ?? '');
    else if (e.valueFrom?.fieldRef)
      env[e.name] = e.valueFrom.fieldRef.fieldPath === 'status.podIP' ? '10.1.2.3' : 'pod-7f9c';
    else if (e.valueFrom?.secretKeyRef) {
      const { name, key } = e.valueFrom.secretKeyRef;
      assert.equal(name, K8S_SECRET, `${service}: ${e.name} from ${K8S_SECRET}`);
      assert.equal(K8S_SECRET_KEYS[e.name], key, `${service}: ${e.name} from key ${key}`);
      env[e.name] =
        key === 'api-keys' ? 'k8s-test-key-0123456789:admin' : `k8s-test-${key}-0123456789abcdef0123456789`;
    }
  }
  return env;
}

describe('deploy/k8s', () => {
  it('generates each ConfigMap from the service config schema', () => {
    for (const service of K8S_SERVICES) {
      assert.equal(
        read(k8sEnvFile(service)),
        renderK8sEnvFile(service),
        `${k8sEnvFile(service)} is stale: run \`node scripts/k8s-config.ts\``,
      );
    }
  });

  for (const service of K8S_SERVICES) {
    describe(service, () => {
      const schema = serviceEnvSchemas[service] as EnvSchema;

      it('runs the service, with only variables its schema declares, every required one, and values it accepts', () => {
        const c = container(deployment(service));
        assert.deepEqual(c.command, ['node', `services/${service}/src/main.ts`]);
        assert.ok(existsSync(join(root, 'services', service, 'src', 'main.ts')));
        const env = podEnv(service);
        const known = new Set(Object.keys(schema.shape));
        const unknown = Object.keys(env).filter((k) => k !== 'POD_IP' && !known.has(k));
        assert.deepEqual(unknown, [], `set but not in the ${service} schema`);
        const missing = describeEnv(schema)
          .filter((v) => v.required && !env[v.name])
          .map((v) => v.name);
        assert.deepEqual(missing, [], `required by the ${service} schema`);
        const config = parseEnv(schema, env) as Record<string, unknown>;
        assert.ok(config);
      });

      it('probes /readyz and /healthz on its ops port, and drains on a preStop wait before SIGTERM', () => {
        const d = deployment(service);
        const c = container(d);
        const config = parseEnv(schema, podEnv(service)) as Record<string, number>;
        const portOf = (ref: string | number | undefined) =>
          typeof ref === 'number' ? ref : c.ports.find((p) => p.name === ref)?.containerPort;
        assert.equal(c.readinessProbe?.httpGet?.path, '/readyz');
        assert.equal(c.livenessProbe?.httpGet?.path, '/healthz');
        for (const probe of [c.readinessProbe, c.livenessProbe]) {
          assert.equal(portOf(probe?.httpGet?.port), config[OPS_PORT[service]], `${service} probe port`);
        }
        const source = read(HEALTH_SOURCE[service]);
        assert.ok(
          source.includes("'/readyz'") && source.includes("'/healthz'"),
          `${HEALTH_SOURCE[service]} serves them`,
        );
        if (service === 'connection-server') {
          assert.equal(portOf('devices'), config['PUSHLINE_PORT'], 'the device port');
          assert.equal(
            config['PUSHLINE_INTERNAL_URL'],
            `http://10.1.2.3:${config['PUSHLINE_INTERNAL_PORT']}`,
          );
        }
        const preStop = c.lifecycle?.preStop?.exec?.command ?? [];
        assert.equal(preStop[0], 'sleep', `${service} waits in preStop`);
        const waitS = Number(preStop[1]);
        assert.ok(waitS >= 3, 'long enough for the endpoints to be updated');
        const drainS =
          service === 'connection-server'
            ? ((config['PUSHLINE_DRAIN_WINDOW_MS'] ?? 0) + (config['PUSHLINE_CLOSE_GRACE_MS'] ?? 0)) / 1000
            : service === 'push-api'
              ? (config['PUSHLINE_API_DRAIN_TIMEOUT_MS'] ?? 0) / 1000
              : 0;
        assert.ok(
          (d.spec.template.spec.terminationGracePeriodSeconds ?? 30) >= waitS + drainS + 5,
          `${service}: the grace period covers the preStop wait and the drain (${waitS} + ${drainS} s)`,
        );
      });

      it('has a Service and a PodDisruptionBudget that select its pods', () => {
        const d = deployment(service);
        const labels = d.spec.template.metadata.labels;
        assert.ok(matches(d.spec.selector.matchLabels, labels));
        const services = ofKind<
          K8sObject & { spec: { selector: Record<string, string>; ports: { targetPort: string | number }[] } }
        >('Service').filter((s) => matches(s.spec.selector, labels));
        assert.equal(services.length, 1, `one Service for ${service}`);
        const ports = container(d).ports;
        for (const p of services[0]?.spec.ports ?? []) {
          assert.ok(
            ports.some((c) => c.name === p.targetPort || c.containerPort === p.targetPort),
            `${service} Service port`,
          );
        }
        const pdbs = ofKind<K8sObject & { spec: { selector: { matchLabels: Record<string, string> } } }>(
          'PodDisruptionBudget',
        ).filter((p) => matches(p.spec.selector.matchLabels, labels));
        assert.equal(pdbs.length, 1, `one PodDisruptionBudget for ${service}`);
      });
    });
  }

  it('scales the connection servers on connections per pod, below their maximum', () => {
    const [hpa, ...more] = ofKind<
      K8sObject & {
        spec: {
          scaleTargetRef: { kind: string; name: string };
          metrics: { type: string; pods?: { metric: { name: string }; target: { averageValue: string } } }[];
        };
      }
    >('HorizontalPodAutoscaler');
    assert.ok(hpa && more.length === 0);
    assert.deepEqual(hpa.spec.scaleTargetRef.kind, 'Deployment');
    assert.equal(hpa.spec.scaleTargetRef.name, 'connection-server');
    const [metric] = hpa.spec.metrics;
    assert.equal(metric?.type, 'Pods');
    const name = metric?.pods?.metric.name ?? '';
    // docs/observability.md lists exactly the exported metrics (test/observability checks that).
    assert.ok(read('docs/observability.md').includes(`\`${name}\``), `${name} is an exported metric`);
    const target = Number(metric?.pods?.target.averageValue);
    const max =
      (
        parseEnv(serviceEnvSchemas['connection-server'] as EnvSchema, podEnv('connection-server')) as Record<
          string,
          number
        >
      )['PUSHLINE_MAX_CONNECTIONS'] ?? 0;
    assert.ok(target > 0.5 * max && target <= 0.75 * max, `target ${target} leaves room below ${max}`);
  });

  it('builds with a real kustomize, every reference resolving', async (t) => {
    const tool = await findKustomize();
    if (!tool) {
      t.skip('no kustomize or kubectl on PATH (.ci/run installs kustomize)');
      return;
    }
    for (const dir of [K8S_BASE, 'deploy/k8s/overlays/dev']) {
      const rendered = await build(tool, join(root, dir));
      const kinds = (kind: string): K8sObject[] => rendered.filter((o) => o.kind === kind);
      assert.equal(kinds('Deployment').length, K8S_SERVICES.length, `${dir}: Deployments`);
      assert.equal(kinds('ConfigMap').length, K8S_SERVICES.length, `${dir}: generated ConfigMaps`);
      if (dir === K8S_BASE) continue;
      // The overlay: everything a Deployment refers to is in the build, by its generated name.
      const names = (kind: string) =>
        new Map<string, K8sObject>(kinds(kind).map((o) => [o.metadata.name, o]));
      const configMaps = names('ConfigMap');
      const secrets = names('Secret');
      for (const d of kinds('Deployment') as unknown as Deployment[]) {
        for (const c of d.spec.template.spec.containers) {
          for (const from of c.envFrom ?? []) {
            assert.ok(
              configMaps.has(from.configMapRef?.name ?? ''),
              `${d.metadata.name}: ConfigMap ${from.configMapRef?.name}`,
            );
          }
          for (const e of c.env ?? []) {
            const ref = e.valueFrom?.secretKeyRef;
            if (!ref) continue;
            const secret = secrets.get(ref.name);
            assert.ok(secret?.data?.[ref.key] !== undefined, `${d.metadata.name}: ${ref.name}/${ref.key}`);
          }
        }
      }
      assert.ok(
        rendered.every((o) => o.metadata.namespace === 'pushline-dev'),
        'one namespace',
      );
    }
  });
});

async function build(tool: { command: string; args: string[] }, dir: string): Promise<K8sObject[]> {
  const { stdout } = await run(tool.command, [...tool.args, dir], { maxBuffer: 16 * 1024 * 1024 });
  return parseAllDocuments(stdout).map((d) => d.toJS() as K8sObject);
}

/** kustomize v5 (PATH or the cache's bin), else `kubectl kustomize`. */
async function findKustomize(): Promise<{ command: string; args: string[] } | undefined> {
  const cacheBin = join(process.env['PUSHLINE_CACHE_DIR'] ?? join(root, '.cache'), 'bin', 'kustomize');
  for (const candidate of ['kustomize', cacheBin]) {
    try {
      await run(candidate, ['version']);
      return { command: candidate, args: ['build'] };
    } catch {
      // not this one
    }
  }
  try {
    await run('kubectl', ['kustomize', '--help']);
    return { command: 'kubectl', args: ['kustomize'] };
  } catch {
    return undefined;
  }
}
