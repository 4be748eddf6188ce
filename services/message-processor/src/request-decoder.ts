import { PushRequest, payloadBytes, type DlqReason } from '@pushline/protocol';

export type DecodeResult =
  | { readonly ok: true; readonly request: PushRequest }
  | { readonly ok: false; readonly reason: DlqReason; readonly detail: string };

/** Longest `detail` put in a DLQ header: enough to see what was wrong, never the whole record. */
const MAX_DETAIL = 512;

/**
 * Turns a push-requests record value into a `PushRequest`, or says why it belongs in the DLQ:
 * `unparseable` (empty or not JSON), `schema_invalid` (JSON, but not a v1 request) or
 * `payload_too_large` (a valid request whose payload exceeds `maxPayloadBytes`).
 */
export function decodePushRequest(value: Buffer | null, maxPayloadBytes: number): DecodeResult {
  if (value === null || value.length === 0) {
    return { ok: false, reason: 'unparseable', detail: 'empty record value' };
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
  if (size > maxPayloadBytes) {
    return {
      ok: false,
      reason: 'payload_too_large',
      detail: `payload is ${size} bytes, the limit is ${maxPayloadBytes}`,
    };
  }
  return { ok: true, request: parsed.data };
}

function truncate(text: string): string {
  return text.length <= MAX_DETAIL ? text : `${text.slice(0, MAX_DETAIL - 1)}…`;
}
