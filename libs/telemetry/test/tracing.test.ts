import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  context,
  createLogger,
  createSpanRecorder,
  extractTraceContext,
  injectTraceHeaders,
  SpanKind,
  startTracing,
  trace,
  TracingAlreadyStartedError,
  withSpan,
  type TracingHandle,
} from '@pushline/telemetry';

describe('startTracing', () => {
  it('is off without OTEL_* configuration or span processors', async () => {
    const handle = startTracing({ serviceName: 'svc', instanceId: 'i1', env: {} });
    assert.equal(handle.enabled, false);
    assert.equal(trace.getTracer('t').startSpan('x').isRecording(), false);
    await handle.close();
  });

  it('is off when OTEL_SDK_DISABLED=true even with an endpoint', async () => {
    const handle = startTracing({
      serviceName: 'svc',
      instanceId: 'i1',
      env: { OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' },
    });
    assert.equal(handle.enabled, false);
    await handle.close();
  });

  it('refuses a second start in the process and can start again after close', async () => {
    const recorder = createSpanRecorder();
    const first = startTracing({
      serviceName: 'svc',
      instanceId: 'i1',
      spanProcessors: [recorder.spanProcessor],
    });
    assert.throws(
      () =>
        startTracing({
          serviceName: 'svc',
          instanceId: 'i2',
          spanProcessors: [createSpanRecorder().spanProcessor],
        }),
      TracingAlreadyStartedError,
    );
    await first.close();
    await first.close();
    const second = startTracing({
      serviceName: 'svc',
      instanceId: 'i3',
      spanProcessors: [createSpanRecorder().spanProcessor],
    });
    assert.equal(second.enabled, true);
    await second.close();
  });
});

describe('tracing with a span recorder', () => {
  const recorder = createSpanRecorder();
  let handle: TracingHandle;
  const tracer = () => trace.getTracer('pushline-test');

  before(() => {
    handle = startTracing({
      serviceName: 'pushline-test',
      instanceId: 'instance-7',
      serviceVersion: '9.9.9',
      spanProcessors: [recorder.spanProcessor],
    });
  });
  after(() => handle.close());
  afterEach(() => recorder.reset());

  it('stamps service name, instance id and version on every span', async () => {
    tracer().startSpan('probe').end();
    await recorder.flush();
    const [span] = recorder.spans();
    assert.ok(span);
    const attrs = span.resource.attributes;
    assert.equal(attrs['service.name'], 'pushline-test');
    assert.equal(attrs['service.instance.id'], 'instance-7');
    assert.equal(attrs['service.version'], '9.9.9');
  });

  it('keeps the active span across await (AsyncLocalStorage context manager)', async () => {
    await withSpan(tracer(), 'outer', { kind: SpanKind.SERVER }, async () => {
      await tick();
      await new Promise((resolve) => setTimeout(resolve, 1));
      await withSpan(tracer(), 'inner', {}, async () => {
        await tick();
      });
    });
    await recorder.flush();
    const outer = recorder.spans().find((s) => s.name === 'outer');
    const inner = recorder.spans().find((s) => s.name === 'inner');
    assert.ok(outer && inner);
    assert.equal(inner.spanContext().traceId, outer.spanContext().traceId);
    assert.equal(inner.parentSpanContext?.spanId, outer.spanContext().spanId);
    assert.equal(outer.kind, SpanKind.SERVER);
  });

  it('records a thrown error on the span and rethrows it', async () => {
    await assert.rejects(
      withSpan(tracer(), 'fails', {}, async () => {
        await tick();
        throw new Error('boom');
      }),
      /boom/,
    );
    await recorder.flush();
    const span = recorder.spans().find((s) => s.name === 'fails');
    assert.equal(span?.status.code, 2);
    assert.equal(span?.events[0]?.name, 'exception');
  });

  it('round-trips W3C headers: a span started from extracted headers continues the trace', async () => {
    let headers: ReturnType<typeof injectTraceHeaders> = {};
    let producer: { traceId: string; spanId: string } | undefined;
    await withSpan(tracer(), 'send t', { kind: SpanKind.PRODUCER }, async (span) => {
      headers = injectTraceHeaders();
      producer = span.spanContext();
    });
    assert.match(headers.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    // Somewhere else, with nothing active:
    const consumed = await context.with(context.active(), () =>
      withSpan(
        tracer(),
        'process t',
        { kind: SpanKind.CONSUMER, parent: extractTraceContext(headers) },
        async (s) => s.spanContext(),
      ),
    );
    assert.equal(consumed.traceId, producer?.traceId);
    await recorder.flush();
    const processSpan = recorder.spans().find((s) => s.name === 'process t');
    assert.equal(processSpan?.parentSpanContext?.spanId, producer?.spanId);
    assert.equal(processSpan?.parentSpanContext?.isRemote, true);
  });

  it('keeps tracestate through inject and extract', () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const ctx = extractTraceContext({ traceparent, tracestate: 'vendor=abc' });
    assert.deepEqual(injectTraceHeaders(ctx), { traceparent, tracestate: 'vendor=abc' });
  });

  it('ignores missing or malformed headers and falls back to the active context', () => {
    assert.equal(trace.getSpanContext(extractTraceContext(undefined)), undefined);
    assert.equal(trace.getSpanContext(extractTraceContext({ traceparent: 'garbage' })), undefined);
  });

  it('writes trace_id and span_id on log lines inside a span, and none outside', async () => {
    const lines: Record<string, unknown>[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
        }
        done();
      },
    });
    const logger = createLogger({ service: 'svc', level: 'debug', base: { serverId: 's1' }, destination });
    logger.info('outside');
    const ids = await withSpan(tracer(), 'logging', {}, async (span) => {
      await tick();
      logger.debug({ k: 1 }, 'inside');
      return span.spanContext();
    });
    assert.equal(lines.length, 2);
    const [outside, inside] = lines;
    assert.equal(outside?.['trace_id'], undefined);
    assert.equal(outside?.['service'], 'svc');
    assert.equal(inside?.['trace_id'], ids.traceId);
    assert.equal(inside?.['span_id'], ids.spanId);
    assert.equal(inside?.['level'], 'debug');
    assert.equal(inside?.['serverId'], 's1');
    assert.equal(inside?.['msg'], 'inside');
  });
});
