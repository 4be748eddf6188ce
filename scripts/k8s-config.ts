// Writes each service's ConfigMap source under deploy/k8s/base from its config schema
// (`--check` only compares), so Kubernetes reads the same env table as the README and compose.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { K8S_SERVICES, k8sEnvFile, renderK8sEnvFile } from './lib/k8s-config.ts';

const root = join(import.meta.dirname, '..');
let stale = false;
for (const service of K8S_SERVICES) {
  const file = join(root, k8sEnvFile(service));
  const next = renderK8sEnvFile(service);
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(file, 'utf8');
    } catch {
      // missing counts as stale
    }
    if (current !== next) {
      process.stderr.write(`${k8sEnvFile(service)} is stale: run \`node scripts/k8s-config.ts\`\n`);
      stale = true;
    }
  } else {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, next);
  }
}
if (stale) process.exit(1);
