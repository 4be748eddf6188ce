/**
 * A strict reader of the Prometheus text exposition format (0.0.4), for tests that check what
 * `/metrics` serves and read counters out of it. Strict means it rejects what a lenient scraper
 * would silently drop: malformed lines, bad names or escapes, duplicate series, a family split
 * in two, HELP/TYPE after samples, histograms whose buckets are not cumulative.
 */

export type PromMetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface PromSample {
  /** The sample's own name, e.g. `x_bucket` for a histogram `x`. */
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
  readonly timestampMs?: number;
}

export interface PromFamily {
  readonly name: string;
  readonly type: PromMetricType;
  readonly help: string | undefined;
  readonly samples: PromSample[];
}

export class PromParseError extends Error {
  override readonly name = 'PromParseError';
  /** 1-based line number, 0 for checks over a whole family. */
  readonly line: number;
  constructor(line: number, message: string) {
    super(line > 0 ? `line ${line}: ${message}` : message);
    this.line = line;
  }
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES: readonly string[] = ['counter', 'gauge', 'histogram', 'summary', 'untyped'];

interface MutableFamily {
  name: string;
  type: PromMetricType;
  typeLine: number;
  help: string | undefined;
  samples: PromSample[];
}

/** Parses a whole exposition; throws `PromParseError` at the first violation. */
export function parsePrometheusText(text: string): PromFamily[] {
  const families = new Map<string, MutableFamily>();
  const closed = new Set<string>();
  const seriesSeen = new Set<string>();
  let current: MutableFamily | undefined;

  const open = (name: string, line: number): MutableFamily => {
    if (current?.name === name) return current;
    if (current) closed.add(current.name);
    if (closed.has(name))
      throw new PromParseError(line, `family ${name} is split: its lines are not contiguous`);
    const family: MutableFamily = { name, type: 'untyped', typeLine: 0, help: undefined, samples: [] };
    families.set(name, family);
    current = family;
    return family;
  };

  const lines = text.split('\n');
  if (text.length > 0 && lines[lines.length - 1] !== '') {
    throw new PromParseError(lines.length, 'exposition must end with a newline');
  }
  lines.forEach((raw, index) => {
    const line = index + 1;
    if (raw.trim() === '') return;
    if (raw.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(raw);
      if (!m) return; // a plain comment
      const [, keyword, name = '', rest = ''] = m;
      if (!METRIC_NAME.test(name)) throw new PromParseError(line, `bad metric name ${JSON.stringify(name)}`);
      const family = open(name, line);
      if (family.samples.length > 0)
        throw new PromParseError(line, `${keyword} for ${name} after its samples`);
      if (keyword === 'HELP') {
        if (family.help !== undefined) throw new PromParseError(line, `second HELP for ${name}`);
        family.help = unescapeHelp(rest, line);
      } else {
        if (family.typeLine > 0) throw new PromParseError(line, `second TYPE for ${name}`);
        const type = rest.trim();
        if (!TYPES.includes(type)) throw new PromParseError(line, `unknown type ${JSON.stringify(type)}`);
        family.type = type as PromMetricType;
        family.typeLine = line;
      }
      return;
    }
    const sample = parseSample(raw, line);
    const family = open(familyOf(sample.name, current), line);
    const key = `${sample.name}${canonicalLabels(sample.labels)}`;
    if (seriesSeen.has(key)) throw new PromParseError(line, `duplicate series ${key}`);
    seriesSeen.add(key);
    checkSampleAgainstType(family, sample, line);
    family.samples.push(sample);
  });

  for (const family of families.values()) {
    if (family.type === 'histogram') checkHistogram(family);
  }
  return [...families.values()].map(({ name, type, help, samples }) => ({ name, type, help, samples }));
}

/** Samples of the family `name` (all of them, or those whose labels include `labels`). */
export function findSamples(
  families: readonly PromFamily[],
  sampleName: string,
  labels: Readonly<Record<string, string>> = {},
): PromSample[] {
  return families
    .flatMap((f) => f.samples)
    .filter((s) => s.name === sampleName && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** Sum of the samples `findSamples` selects; 0 when there are none. */
export function sumSamples(
  families: readonly PromFamily[],
  sampleName: string,
  labels: Readonly<Record<string, string>> = {},
): number {
  return findSamples(families, sampleName, labels).reduce((sum, s) => sum + s.value, 0);
}

function familyOf(sampleName: string, current: MutableFamily | undefined): string {
  if (current && sampleName !== current.name) {
    const suffixes =
      current.type === 'histogram'
        ? ['_bucket', '_sum', '_count']
        : current.type === 'summary'
          ? ['_sum', '_count']
          : [];
    if (suffixes.some((s) => sampleName === current.name + s)) return current.name;
  }
  return sampleName;
}

function checkSampleAgainstType(family: MutableFamily, sample: PromSample, line: number): void {
  const own = sample.name === family.name;
  switch (family.type) {
    case 'counter':
      if (Number.isNaN(sample.value) || sample.value < 0) {
        throw new PromParseError(line, `counter ${sample.name} has value ${sample.value}`);
      }
      break;
    case 'histogram':
      if (own) throw new PromParseError(line, `histogram ${family.name} has a bare sample`);
      if (sample.name.endsWith('_bucket') && sample.labels['le'] === undefined) {
        throw new PromParseError(line, `bucket of ${family.name} without an le label`);
      }
      break;
    case 'summary':
      if (own && sample.labels['quantile'] === undefined) {
        throw new PromParseError(line, `summary ${family.name} sample without a quantile label`);
      }
      break;
    default:
      break;
  }
}

/** Buckets are cumulative per series, end at +Inf, and +Inf equals _count. */
function checkHistogram(family: MutableFamily): void {
  const series = new Map<
    string,
    { buckets: { le: number; value: number }[]; count?: number; sum?: number }
  >();
  const entry = (labels: Readonly<Record<string, string>>) => {
    const { le: _le, ...rest } = labels;
    const key = canonicalLabels(rest);
    let e = series.get(key);
    if (!e) series.set(key, (e = { buckets: [] }));
    return { key, e };
  };
  for (const s of family.samples) {
    const { e } = entry(s.labels);
    if (s.name.endsWith('_bucket'))
      e.buckets.push({ le: parseValue(s.labels['le'] ?? '', 0), value: s.value });
    else if (s.name.endsWith('_count')) e.count = s.value;
    else e.sum = s.value;
  }
  for (const [key, e] of series) {
    const where = `histogram ${family.name}${key}`;
    if (e.count === undefined || e.sum === undefined)
      throw new PromParseError(0, `${where} lacks _count or _sum`);
    const last = e.buckets.at(-1);
    if (!last || last.le !== Infinity) throw new PromParseError(0, `${where} has no +Inf bucket last`);
    for (let i = 1; i < e.buckets.length; i++) {
      const prev = e.buckets[i - 1];
      const cur = e.buckets[i];
      if (prev && cur && (cur.le <= prev.le || cur.value < prev.value)) {
        throw new PromParseError(0, `${where} buckets are not increasing and cumulative at le=${cur.le}`);
      }
    }
    if (last.value !== e.count)
      throw new PromParseError(0, `${where} +Inf bucket ${last.value} != _count ${e.count}`);
  }
}

function parseSample(raw: string, line: number): PromSample {
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(raw);
  if (!nameMatch) throw new PromParseError(line, `bad sample line ${JSON.stringify(raw)}`);
  const name = nameMatch[0];
  let pos = name.length;
  const labels: Record<string, string> = {};
  if (raw[pos] === '{') {
    pos++;
    for (;;) {
      if (raw[pos] === '}') {
        pos++;
        break;
      }
      const labelMatch = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(raw.slice(pos));
      if (!labelMatch?.[1]) throw new PromParseError(line, `bad label at column ${pos + 1}`);
      const labelName = labelMatch[1];
      if (!LABEL_NAME.test(labelName) || labelName.startsWith('__')) {
        throw new PromParseError(line, `reserved or bad label name ${labelName}`);
      }
      if (labelName in labels) throw new PromParseError(line, `label ${labelName} given twice`);
      pos += labelMatch[0].length;
      let value = '';
      for (;;) {
        const ch = raw[pos];
        if (ch === undefined) throw new PromParseError(line, 'unterminated label value');
        pos++;
        if (ch === '"') break;
        if (ch === '\\') {
          const next = raw[pos++];
          if (next === 'n') value += '\n';
          else if (next === '\\' || next === '"') value += next;
          else throw new PromParseError(line, `bad escape \\${next ?? ''} in label value`);
        } else {
          value += ch;
        }
      }
      labels[labelName] = value;
      if (raw[pos] === ',') pos++;
      else if (raw[pos] !== '}') throw new PromParseError(line, `expected , or } at column ${pos + 1}`);
    }
  }
  const rest = raw.slice(pos);
  const m = /^ +(\S+)(?: +(-?\d+))? *$/.exec(rest);
  if (!m?.[1]) throw new PromParseError(line, `bad value in ${JSON.stringify(raw)}`);
  const value = parseValue(m[1], line);
  return m[2] === undefined ? { name, labels, value } : { name, labels, value, timestampMs: Number(m[2]) };
}

/** Numbers as Prometheus reads them (Go's ParseFloat): NaN and Inf in any case, e.g. prom-client's `Nan`. */
function parseValue(text: string, line: number): number {
  const special = /^([-+]?)(inf|infinity|nan)$/i.exec(text);
  if (special) {
    if (special[2]?.toLowerCase() === 'nan') return NaN;
    return special[1] === '-' ? -Infinity : Infinity;
  }
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) {
    throw new PromParseError(line, `bad number ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function unescapeHelp(text: string, line: number): string {
  return text.replace(/\\(.?)/g, (_, c: string) => {
    if (c === 'n') return '\n';
    if (c === '\\') return '\\';
    throw new PromParseError(line, `bad escape \\${c} in HELP`);
  });
}

function canonicalLabels(labels: Readonly<Record<string, string>>): string {
  const keys = Object.keys(labels).sort();
  return keys.length === 0 ? '' : `{${keys.map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',')}}`;
}
