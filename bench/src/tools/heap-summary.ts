// `node bench/src/tools/heap-summary.ts <after.heapsnapshot> [--before=<before.heapsnapshot>] [--per=N] [--top=20]`:
// where a server's JS heap goes, by constructor (self size, as the "Summary" view of DevTools
// groups it), as the difference between two snapshots divided by the connections added between
// them (`npm run bench -- --scenarios=1 --heap-snapshot` writes both for the baseline and for a
// connection server, and prints this summary).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { z } from 'zod';

const HeapSnapshot = z.object({
  snapshot: z.object({
    meta: z.object({
      node_fields: z.array(z.string()),
      node_types: z.array(z.union([z.array(z.string()), z.string()])),
    }),
  }),
  nodes: z.array(z.number()),
  strings: z.array(z.string()),
});

export interface ConstructorTotal {
  readonly count: number;
  readonly selfBytes: number;
}

/**
 * How a node is grouped: objects by constructor name, everything else by V8's own category, so
 * the groups partition the heap (self sizes add up to the snapshot's total).
 */
function groupOf(type: string, name: string): string {
  switch (type) {
    case 'object':
    case 'native':
      return name;
    case 'closure':
      return '(closure)';
    case 'string':
    case 'concatenated string':
    case 'sliced string':
      return '(string)';
    case 'array':
      return name.startsWith('(') ? name : '(array)';
    case 'code':
      return '(compiled code)';
    case 'number':
    case 'heap number':
    case 'bigint':
      return '(number)';
    case 'regexp':
      return '(regexp)';
    default:
      return '(system)';
  }
}

/** Node count and self bytes per constructor of a `.heapsnapshot` file's text. */
export function constructorTotals(text: string): Map<string, ConstructorTotal> {
  const snap = HeapSnapshot.parse(JSON.parse(text));
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  if (!Array.isArray(types)) throw new Error('heap snapshot without node type names');
  const [typeAt, nameAt, sizeAt] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
  if (
    typeAt === undefined ||
    nameAt === undefined ||
    sizeAt === undefined ||
    Math.min(typeAt, nameAt, sizeAt) < 0
  )
    throw new Error('heap snapshot without type, name or self_size fields');
  const totals = new Map<string, { count: number; selfBytes: number }>();
  const { nodes, strings } = snap;
  for (let i = 0; i < nodes.length; i += fields.length) {
    const type = types[nodes[i + typeAt] as number] ?? 'unknown';
    const group = groupOf(type, strings[nodes[i + nameAt] as number] ?? '');
    const t = totals.get(group) ?? { count: 0, selfBytes: 0 };
    t.count++;
    t.selfBytes += nodes[i + sizeAt] as number;
    totals.set(group, t);
  }
  return totals;
}

export interface PerConnectionRow {
  readonly constructorName: string;
  /** Objects added per connection. */
  readonly count: number;
  /** Self bytes added per connection. */
  readonly bytes: number;
}

/** after − before, divided by `per` connections, largest first. */
export function perConnection(
  after: Map<string, ConstructorTotal>,
  before: Map<string, ConstructorTotal> | undefined,
  per: number,
): { totalBytes: number; rows: PerConnectionRow[] } {
  const n = Math.max(1, per);
  const rows: PerConnectionRow[] = [];
  let total = 0;
  for (const [name, a] of after) {
    const b = before?.get(name) ?? { count: 0, selfBytes: 0 };
    const bytes = (a.selfBytes - b.selfBytes) / n;
    total += bytes;
    rows.push({ constructorName: name, count: (a.count - b.count) / n, bytes });
  }
  rows.sort((x, y) => y.bytes - x.bytes);
  return { totalBytes: total, rows };
}

export function formatPerConnection(
  summary: { totalBytes: number; rows: PerConnectionRow[] },
  per: number,
  top = 20,
): string {
  const lines = summary.rows
    .slice(0, top)
    .map(
      (r) =>
        `  ${r.bytes.toFixed(0).padStart(7)} B  ${((100 * r.bytes) / Math.max(1, summary.totalBytes)).toFixed(1).padStart(5)}%  ${r.count.toFixed(2).padStart(7)} objs  ${r.constructorName}`,
    );
  return [
    `JS heap self size added per connection: ${summary.totalBytes.toFixed(0)} B over ${per} connections`,
    '    bytes  share   objects  constructor',
    ...lines,
  ].join('\n');
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { before: { type: 'string' }, per: { type: 'string' }, top: { type: 'string' } },
  });
  const [file] = positionals;
  if (!file) {
    process.stderr.write(
      'usage: node bench/src/tools/heap-summary.ts <after.heapsnapshot> [--before=<file>] [--per=N] [--top=20]\n',
    );
    process.exit(2);
  }
  const per = Number(values.per ?? 1);
  const after = constructorTotals(readFileSync(file, 'utf8'));
  const before = values.before ? constructorTotals(readFileSync(values.before, 'utf8')) : undefined;
  process.stdout.write(
    `${formatPerConnection(perConnection(after, before, per), per, Number(values.top ?? 20))}\n`,
  );
}
