import { PushRequest, jsonTextTooDeep, payloadBytes, type DlqReason } from '@pushline/protocol';

export type DecodeResult =
  | { readonly ok: true; readonly request: PushRequest }
  | { readonly ok: false; readonly reason: DlqReason; readonly detail: string };

export interface DecodeLimits {
  /** Largest payload a request may carry, in JSON bytes (`PUSHLINE_MAX_PAYLOAD_BYTES`). */
  readonly maxPayloadBytes: number;
  /** Deepest nesting of the payload (`PUSHLINE_MAX_JSON_DEPTH`). */
  readonly maxDepth: number;
  /** Largest record value read at all (`PUSHLINE_PROCESSOR_MAX_RECORD_BYTES`). */
  readonly maxRecordBytes: number;
}

/** Longest `detail` put in a DLQ header: enough to see what was wrong, never the whole record. */
const MAX_DETAIL = 512;

/**
 * Turns a push-requests record value into a `PushRequest`, or says why it belongs in the DLQ.
 * Size and depth are checked on the raw bytes first, without recursion, so nothing recursive
 * (zod, `JSON.stringify`) ever sees a record that could overflow the stack:
 * `unparseable` (a tombstone, empty, or not JSON), `payload_too_large` (the record is over
 * `maxRecordBytes`, or its payload over `maxPayloadBytes`), `too_deep` (the payload nests deeper
 * than `maxDepth`; the request object around it is one level), `schema_invalid` (JSON, but not a
 * v1 request).
 */
export function decodePushRequest(value: Buffer | null, limits: DecodeLimits): DecodeResult {
  if (value === null) return { ok: false, reason: 'unparseable', detail: 'tombstone (null value)' };
  if (value.length === 0) return { ok: false, reason: 'unparseable', detail: 'empty record value' };
  if (value.length > limits.maxRecordBytes) {
    return {
      ok: false,
      reason: 'payload_too_large',
      detail: `record is ${value.length} bytes, the limit is ${limits.maxRecordBytes}`,
    };
  }
  // The payload sits one level inside the request object.
  if (jsonTextTooDeep(value, limits.maxDepth + 1)) {
    return {
      ok: false,
      reason: 'too_deep',
      detail: `nested deeper than ${limits.maxDepth} levels inside the request`,
    };
  }
  let json: unknown;
  try {
    json = JSON.parse(value.toString('utf8'));
  } catch (err) {
    return {
      ok: false,
      reason: 'unparseable',
      detail: truncate(err instanceof Error ? err.message : String(err)),
    };
  }
  const parsed = PushRequest.safeParse(json);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    return { ok: false, reason: 'schema_invalid', detail: truncate(detail) };
  }
  const size = payloadBytes(parsed.data.payload);
  if (size > limits.maxPayloadBytes) {
    return {
      ok: false,
      reason: 'payload_too_large',
      detail: `payload is ${size} bytes, the limit is ${limits.maxPayloadBytes}`,
    };
  }
  return { ok: true, request: parsed.data };
}

export function truncate(text: string): string {
  return text.length <= MAX_DETAIL ? text : `${text.slice(0, MAX_DETAIL - 1)}…`;
}
