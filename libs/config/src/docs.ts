import { canaryEnv } from './canary.ts';
import { connectionServerEnv } from './connection-server.ts';
import { consoleEnv } from './console.ts';
import { messageProcessorEnv } from './message-processor.ts';
import { describeEnv, type EnvSchema } from './parse.ts';
import { pushApiEnv } from './push-api.ts';

export const serviceEnvSchemas: Readonly<Record<string, EnvSchema>> = {
  'connection-server': connectionServerEnv,
  'message-processor': messageProcessorEnv,
  'push-api': pushApiEnv,
  canary: canaryEnv,
  console: consoleEnv,
};

/**
 * The README's configuration table, generated from the schemas so it cannot drift: one row per
 * variable, with the services that read it, its default and its description.
 */
export function renderConfigTable(): string {
  const rows = new Map<string, { services: string[]; doc: ReturnType<typeof describeEnv>[number] }>();
  for (const [service, schema] of Object.entries(serviceEnvSchemas)) {
    for (const doc of describeEnv(schema)) {
      const row = rows.get(doc.name);
      if (row) row.services.push(service);
      else rows.set(doc.name, { services: [service], doc });
    }
  }
  const all = Object.keys(serviceEnvSchemas).length;
  const lines = ['| Variable | Services | Default | Description |', '|---|---|---|---|'];
  for (const [name, { services, doc }] of [...rows].sort(([a], [b]) => a.localeCompare(b))) {
    const where = services.length === all ? 'all' : services.join(', ');
    const fallback = doc.required ? '**required**' : doc.default === undefined ? '—' : `\`${doc.default}\``;
    lines.push(`| \`${name}\` | ${where} | ${fallback} | ${doc.description.replace(/\|/g, '\\|')} |`);
  }
  return lines.join('\n');
}
