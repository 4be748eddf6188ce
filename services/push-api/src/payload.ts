import { payloadBytes } from '@pushline/protocol';
import { ProblemError } from './problem.ts';

/** 413 `payload-too-large` naming the field, when a payload serialises to more than `max` bytes. */
export function checkPayloadSize(payload: unknown, field: string, max: number): void {
  const size = payloadBytes(payload);
  if (size > max) {
    throw new ProblemError('payload-too-large', `${field} is ${size} bytes; the limit is ${max}.`, {
      errors: [{ field, in: 'body', message: `must be at most ${max} bytes of JSON (is ${size})` }],
    });
  }
}
