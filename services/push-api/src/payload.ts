import { checkJsonValue, payloadBytes } from '@pushline/protocol';
import { ProblemError } from './problem.ts';

/**
 * Levels a request body may nest around a payload: `{ "messages": [ { "payload": … } ] }`. The
 * whole body is bounded at the payload limit plus these before any recursive walk touches it.
 */
const BODY_ENVELOPE_DEPTH = 3;

export interface PayloadLimits {
  /** Largest payload, in bytes of JSON (PUSHLINE_MAX_PAYLOAD_BYTES). */
  readonly maxBytes: number;
  /** Deepest nesting of arrays and objects in a payload (PUSHLINE_MAX_JSON_DEPTH). */
  readonly maxDepth: number;
}

/** 400 `json-too-deep` when a request body nests deeper than any valid request can. */
export function checkBodyDepth(body: unknown, maxPayloadDepth: number): void {
  if (checkJsonValue(body, maxPayloadDepth + BODY_ENVELOPE_DEPTH) === 'too_deep') {
    throw new ProblemError(
      'json-too-deep',
      `The body nests arrays and objects more than ${maxPayloadDepth + BODY_ENVELOPE_DEPTH} levels deep; a payload may nest at most ${maxPayloadDepth} (PUSHLINE_MAX_JSON_DEPTH).`,
    );
  }
}

/**
 * A payload within the limits, checked depth first (without recursion) so that measuring its size
 * cannot overflow the stack: 400 `json-too-deep` or 413 `payload-too-large`, naming the field.
 */
export function checkPayload(payload: unknown, field: string, limits: PayloadLimits): void {
  if (checkJsonValue(payload, limits.maxDepth) === 'too_deep') {
    throw new ProblemError(
      'json-too-deep',
      `${field} nests arrays and objects more than ${limits.maxDepth} levels deep.`,
      {
        errors: [{ field, in: 'body', message: `must nest at most ${limits.maxDepth} levels deep` }],
      },
    );
  }
  const size = payloadBytes(payload);
  if (size > limits.maxBytes) {
    throw new ProblemError(
      'payload-too-large',
      `${field} is ${size} bytes; the limit is ${limits.maxBytes}.`,
      {
        errors: [
          { field, in: 'body', message: `must be at most ${limits.maxBytes} bytes of JSON (is ${size})` },
        ],
      },
    );
  }
}
