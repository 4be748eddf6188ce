import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { Kafka, logLevel, type IHeaders, type Message } from 'kafkajs';
import type { TopicNames } from '@pushline/config';
import type { IncomingRecord } from '@pushline/kafka';
import { DlqHeaders, PushRequest, type DlqReason } from '@pushline/protocol';
import { testKafkaClient, waitUntil } from '@pushline/testkit';
import { brief, deepArrayText, hang, OK, wrong, type HostileCase, type Verdict } from './harness.ts';
import { hashOf } from './http-cases.ts';
import type { LiveDevice } from './live-device.ts';

/**
 * Records produced straight into `<prefix>push-requests`, as any producer with access to the
 * topic could: not JSON, the wrong schema, huge, deep, binary, tombstones, hostile keys and
 * headers. Every bad record must reach the DLQ with a reason (docs/delivery-guarantees.md, "Bad
 * records"); valid records with hostile headers must be delivered; and after all of them a good
 * record on every partition must still reach a live device, so no record stopped a partition.
 */

/** Header that ties a DLQ record back to its case. */
const CASE_HEADER = 'x-hostile-case';
/** Default PUSHLINE_MAX_PAYLOAD_BYTES and PUSHLINE_MAX_JSON_DEPTH. */
const MAX_PAYLOAD = 4096;
const MAX_DEPTH = 32;
/** PUSHLINE_PROCESSOR_MAX_RECORD_BYTES (default): a larger value is dead-lettered unread. */
const MAX_RECORD = 65_536;

export interface KafkaContext {
  readonly brokers: readonly string[];
  readonly topics: TopicNames;
  readonly partitions: number;
  readonly device: LiveDevice;
  readonly seed: number;
  /** How long the DLQ and the device get to show every record. */
  readonly deadlineMs: number;
}

type Expect =
  /** Dead-lettered with this reason (docs fix it), or with any reason. */
  | { dlq: DlqReason | 'any'; nullValue?: boolean }
  /** Valid: delivered to the live device, never dead-lettered. */
  | { delivered: true }
  /** Valid, for a device nobody holds: processed, never dead-lettered. */
  | { processed: true };

interface PlannedRecord {
  readonly name: string;
  readonly item?: number;
  readonly message: Message;
  readonly expect: Expect;
  /** Request id, for records that must be delivered. */
  readonly requestId?: string;
}

interface Observed {
  readonly dlq: Map<string, IncomingRecord>;
}

export function kafkaCases(ctx: KafkaContext): {
  cases: HostileCase[];
  produce: () => Promise<void>;
  close: () => Promise<void>;
} {
  const runId = randomBytes(4).toString('hex');
  const planned: PlannedRecord[] = [];
  const request = (overrides: Record<string, unknown> = {}) => ({
    v: 1,
    id: `hx-k-${runId}-${planned.length}`,
    target: { type: 'device', id: 'hx-kafka-nobody' },
    payload: { hostile: true },
    createdAt: Date.now(),
    ...overrides,
  });
  const plan = (
    name: string,
    value: Message['value'],
    expect: Expect,
    extra: { key?: Message['key']; headers?: IHeaders; item?: number; requestId?: string } = {},
  ) => {
    const n = String(planned.length);
    planned.push({
      name,
      ...(extra.item === undefined ? {} : { item: extra.item }),
      ...(extra.requestId === undefined ? {} : { requestId: extra.requestId }),
      expect,
      message: {
        key: extra.key === undefined ? `hx-case-${n}` : extra.key,
        value,
        partition: planned.length % ctx.partitions,
        headers: { ...extra.headers, [CASE_HEADER]: `${runId}:${n}` },
      },
    });
  };
  const withPayloadText = (payloadText: string) =>
    JSON.stringify(request({ payload: '__P__' })).replace('"__P__"', payloadText);

  plan('tombstone (NULL value)', null, { dlq: 'unparseable', nullValue: true }, { item: 16 });
  plan('empty value', '', { dlq: 'unparseable' });
  plan('not JSON', 'hello, processor', { dlq: 'unparseable' });
  plan('open brace', '{', { dlq: 'unparseable' });
  plan('invalid UTF-8', Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0xff, 0xfe, 0x7d]), { dlq: 'unparseable' });
  plan('UTF-16LE JSON', Buffer.from(JSON.stringify(request()), 'utf16le'), { dlq: 'unparseable' });
  plan(
    'UTF-8 BOM before a request',
    Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(request()))]),
    { dlq: 'any' },
  );
  for (const v of ['null', '1', '"request"', '[]', '{}', 'true'])
    plan(`JSON ${v}`, v, { dlq: 'schema_invalid' });
  const wrongFields: [string, Record<string, unknown>][] = [
    ['v 2', { v: 2 }],
    ['v missing', { v: undefined }],
    ['id a number', { id: 42 }],
    ['id empty', { id: '' }],
    ['id 129 characters', { id: 'i'.repeat(129) }],
    ['id with @', { id: 'a@b' }],
    ['target type tenant', { target: { type: 'tenant', id: 't' } }],
    ['target id with a space', { target: { type: 'device', id: 'a b' } }],
    ['target a string', { target: 'device:x' }],
    ['target missing', { target: undefined }],
    ['payload missing', { payload: undefined }],
    ['createdAt a string', { createdAt: 'now' }],
    ['createdAt fractional', { createdAt: 1.5 }],
    ['ttlSeconds -1', { ttlSeconds: -1 }],
    ['ttlSeconds a trillion', { ttlSeconds: 1e12 }],
    ['origin with a space', { origin: 'a b' }],
    ['__proto__ target', { target: JSON.parse('{"__proto__":{"type":"device","id":"x"}}') as unknown }],
  ];
  for (const [label, fields] of wrongFields)
    plan(`schema: ${label}`, JSON.stringify(request(fields)), { dlq: 'schema_invalid' });
  plan('payload one byte over', JSON.stringify(request({ payload: 'x'.repeat(MAX_PAYLOAD - 1) })), {
    dlq: 'payload_too_large',
  });
  plan('900 KB payload', JSON.stringify(request({ payload: 'x'.repeat(900_000) })), {
    dlq: 'payload_too_large',
  });
  // The record size is checked before anything parses it (docs/delivery-guarantees.md, "Bad
  // records"): a value over the record limit is payload_too_large whatever its bytes are.
  plan('900 KB of non-JSON', 'x'.repeat(900_000), { dlq: 'payload_too_large' });
  plan('non-JSON at the record limit', 'x'.repeat(MAX_RECORD), { dlq: 'unparseable' });
  plan('non-JSON one byte over the record limit', 'x'.repeat(MAX_RECORD + 1), { dlq: 'payload_too_large' });
  plan(
    `payload ${MAX_DEPTH + 1} deep`,
    withPayloadText(deepArrayText(MAX_DEPTH + 1)),
    { dlq: 'any' },
    { item: 11 },
  );
  plan('payload 2,000 deep', withPayloadText(deepArrayText(2_000)), { dlq: 'any' }, { item: 11 });
  plan('payload 100,000 deep', withPayloadText(deepArrayText(100_000)), { dlq: 'any' }, { item: 11 });
  plan('value 100,000 deep', deepArrayText(100_000), { dlq: 'any' }, { item: 11 });
  plan('null key, not JSON', 'nope', { dlq: 'unparseable' }, { key: null });
  plan('10 KB key, not JSON', 'nope', { dlq: 'unparseable' }, { key: 'k'.repeat(10_000) });
  plan('binary key, not JSON', 'nope', { dlq: 'unparseable' }, { key: Buffer.from([0xff, 0x00, 0xfe]) });
  plan(
    'spoofed DLQ headers',
    'not json',
    { dlq: 'unparseable' },
    {
      headers: {
        [DlqHeaders.reason]: 'payload_too_large',
        [DlqHeaders.sourceOffset]: '-1',
        [DlqHeaders.detail]: 'x'.repeat(5000),
      },
    },
  );
  plan(
    '200 headers, not JSON',
    'nope',
    { dlq: 'unparseable' },
    {
      headers: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`h${i}`, `v${i}`])),
    },
  );
  plan(
    'binary header values, not JSON',
    'nope',
    { dlq: 'unparseable' },
    {
      headers: { traceparent: Buffer.from([0xff, 0xfe, 0x00]), 'x-bin': Buffer.from(randomBytes(64)) },
    },
  );
  plan(
    '64 KB header, not JSON',
    'nope',
    { dlq: 'unparseable' },
    { headers: { 'x-big': 'h'.repeat(65_536) } },
  );
  // Generated: random bytes are never a request; random field values rarely are (checked).
  fc.sample(fc.uint8Array({ minLength: 1, maxLength: 300 }), {
    seed: ctx.seed + hashOf('bytes'),
    numRuns: 15,
  }).forEach((bytes, i) => {
    plan(`generated bytes #${i} (${bytes.length} B)`, Buffer.from(bytes), { dlq: 'any' });
  });
  const field = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.stringMatching(/^[A-Za-z0-9._:-]{1,12}$/),
    fc.constantFrom(1, 0, -1, 'device', { type: 'device', id: 'hx-kafka-nobody' }),
  );
  const requestArb = fc.record(
    { v: field, id: field, target: field, payload: field, ttlSeconds: field, createdAt: field },
    { requiredKeys: [] },
  );
  fc.sample(requestArb, { seed: ctx.seed + hashOf('requests'), numRuns: 15 }).forEach((value, i) => {
    const valid = PushRequest.safeParse(value).success;
    // A valid one goes to a device nobody holds: processed, not dead-lettered; it counts only if nothing breaks.
    plan(
      `generated request #${i} ${brief(value, 50)}`,
      JSON.stringify(value),
      valid ? { processed: true } : { dlq: 'any' },
    );
  });
  // Valid requests with hostile headers: delivered to the live device.
  const forDevice = (label: string, headers: IHeaders) => {
    const id = `hx-kh-${runId}-${planned.length}`;
    plan(
      `valid request, ${label}`,
      JSON.stringify(request({ id, target: { type: 'device', id: ctx.device.id } })),
      { delivered: true },
      { headers, requestId: id, key: `device:${ctx.device.id}` },
    );
  };
  forDevice('garbage traceparent', { traceparent: '00-zzzz-yyyy-01' });
  forDevice('8 KB tracestate', {
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    tracestate: `a=${'b'.repeat(8192)}`,
  });
  forDevice('binary traceparent', { traceparent: Buffer.from([0xff, 0xfe, 0xfd]) });
  forDevice('spoofed DLQ reason header', { [DlqHeaders.reason]: 'unparseable' });
  forDevice('300 headers', Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`x-h${i}`, 'v'])));
  forDevice('empty header name', { '': 'empty' });
  // The partition sweep: one good record per partition, produced after everything above.
  const sweep = Array.from({ length: ctx.partitions }, (_, p) => {
    const id = `hx-sweep-${runId}-${p}`;
    return {
      p,
      id,
      message: {
        key: `device:${ctx.device.id}`,
        partition: p,
        value: JSON.stringify(request({ id, target: { type: 'device', id: ctx.device.id } })),
      },
    };
  });

  const kafka = new Kafka({
    brokers: [...ctx.brokers],
    clientId: `hostile-${runId}`,
    logLevel: logLevel.NOTHING,
  });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  const observed: Observed = { dlq: new Map() };
  const dlqClient = testKafkaClient(`hostile-dlq-${runId}`);
  const dlqConsumer = dlqClient.consumer({
    groupId: `hostile-dlq-${runId}`,
    topics: [ctx.topics.pushRequestsDlq],
    fromBeginning: true,
    handleBatch: async (batch) => {
      for (const r of batch.records) {
        const tag = r.headers[CASE_HEADER];
        if (tag?.startsWith(`${runId}:`)) observed.dlq.set(tag.slice(runId.length + 1), r);
      }
    },
  });
  let finished: Promise<void> | undefined;
  const expectedInDlq = planned.filter((r) => 'dlq' in r.expect).length;
  const allDelivered = () =>
    planned.every((r) => !('delivered' in r.expect) || ctx.device.received.has(r.requestId ?? '')) &&
    sweep.every((s) => ctx.device.received.has(s.id));
  /** Produces every record (bad ones spread over the partitions, then the sweep) and waits for the outcomes. */
  const produce = () =>
    (finished ??= (async () => {
      await Promise.all([producer.connect(), dlqConsumer.start()]);
      // One send per record: one bad record must not take the others down with it on produce.
      for (const r of planned) {
        await producer.send({ topic: ctx.topics.pushRequests, acks: -1, messages: [r.message] });
      }
      await producer.send({
        topic: ctx.topics.pushRequests,
        acks: -1,
        messages: sweep.map((s) => s.message),
      });
      await waitUntil(() => observed.dlq.size >= expectedInDlq && allDelivered(), {
        timeoutMs: ctx.deadlineMs,
        intervalMs: 100,
        what: 'DLQ records and deliveries',
      }).catch(() => {
        // What is missing is judged per case below.
      });
    })());

  const judge = (r: PlannedRecord, index: number): Verdict => {
    const dlq = observed.dlq.get(String(index));
    if ('processed' in r.expect) {
      return dlq ? wrong(`a valid request was dead-lettered: ${dlq.headers[DlqHeaders.reason]}`) : OK;
    }
    if ('delivered' in r.expect) {
      if (dlq) return wrong(`a valid request was dead-lettered: ${dlq.headers[DlqHeaders.reason]}`);
      return ctx.device.received.has(r.requestId ?? '')
        ? OK
        : hang(`not delivered within ${ctx.deadlineMs} ms`);
    }
    if (!dlq) {
      return hang(`not in the DLQ within ${ctx.deadlineMs} ms`);
    }
    const reason = dlq.headers[DlqHeaders.reason];
    if (!reason) return wrong('dead-lettered without a reason header');
    if (!dlq.headers[DlqHeaders.detail]) return wrong('dead-lettered without a detail header');
    if (r.expect.dlq !== 'any' && reason !== r.expect.dlq)
      return wrong(`reason ${reason}; expected ${r.expect.dlq}`);
    if (r.expect.nullValue && dlq.value !== null)
      return wrong(`dead-lettered with a ${dlq.value.length}-byte value instead of NULL`);
    return OK;
  };

  const cases: HostileCase[] = planned.map((r, index) => ({
    family: 'kafka',
    name: r.name,
    ...(r.item === undefined ? {} : { item: r.item }),
    run: async () => {
      await produce();
      return judge(r, index);
    },
  }));
  for (const s of sweep) {
    cases.push({
      family: 'kafka',
      name: `good record on partition ${s.p} after the bad ones`,
      run: async () => {
        await produce();
        return ctx.device.received.has(s.id)
          ? OK
          : hang(`partition ${s.p}: the good record was not delivered within ${ctx.deadlineMs} ms`);
      },
    });
  }
  return {
    cases,
    produce,
    close: async () => {
      await Promise.allSettled([producer.disconnect(), dlqConsumer.close()]);
    },
  };
}
