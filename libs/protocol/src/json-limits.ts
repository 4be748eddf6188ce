/**
 * Bounds on untrusted JSON, checked without recursion before anything recursive (zod's `z.json()`,
 * `JSON.stringify`, socket.io's packet walk) touches it. V8's `JSON.parse` itself is iterative and
 * safe at any depth; what overflows the stack is every walk after it, at about 2 000 levels.
 */

/**
 * Deepest nesting of arrays and objects any entry accepts, whatever its configured limit
 * (`PUSHLINE_MAX_JSON_DEPTH` may only lower it): far below where a recursive walk overflows.
 */
export const JSON_DEPTH_CEILING = 256;

/** Default of `PUSHLINE_MAX_JSON_DEPTH`. */
export const DEFAULT_MAX_JSON_DEPTH = 32;

const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * Whether JSON text nests arrays or objects deeper than `maxDepth` (a scalar is depth 0, `[]` is
 * 1). A single pass over the text that parses nothing: brackets inside strings are skipped, and
 * text that is not JSON is left for the parser to refuse.
 */
export function jsonTextTooDeep(text: string | Uint8Array, maxDepth: number): boolean {
  let depth = 0;
  let inString = false;
  const length = text.length;
  const isString = typeof text === 'string';
  for (let i = 0; i < length; i++) {
    const c = isString ? text.charCodeAt(i) : (text[i] as number);
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > maxDepth) return true;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
    }
  }
  return false;
}

/** What `checkJsonValue` found wrong with a value, if anything. */
export type JsonValueProblem = 'too_deep' | 'not_json';

/**
 * Checks, without recursion, that `value` is a JSON value (null, a boolean, a finite number, a
 * string, an array or a plain object of JSON values) nested at most `maxDepth` deep. For values
 * that did not come from `JSON.parse` (socket.io frames, objects built in process).
 */
export function checkJsonValue(value: unknown, maxDepth: number): JsonValueProblem | undefined {
  // An explicit stack of [value, depth] pairs instead of the call stack.
  const pending: unknown[] = [value];
  const depths: number[] = [0];
  while (pending.length > 0) {
    const v = pending.pop();
    const depth = depths.pop() as number;
    if (v === null || typeof v === 'string' || typeof v === 'boolean') continue;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return 'not_json';
      continue;
    }
    if (typeof v !== 'object') return 'not_json';
    if (depth + 1 > maxDepth) return 'too_deep';
    if (Array.isArray(v)) {
      for (const item of v as unknown[]) {
        pending.push(item);
        depths.push(depth + 1);
      }
      continue;
    }
    const proto: unknown = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) return 'not_json';
    for (const key in v) {
      pending.push((v as Record<string, unknown>)[key]);
      depths.push(depth + 1);
    }
  }
  return undefined;
}
