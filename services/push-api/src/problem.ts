import type { Request, Response } from 'express';
import { PROBLEM_CONTENT_TYPE, problemTypeUri, type FieldError, type Problem } from '@pushline/protocol';
import type { z } from 'zod';

/**
 * Every error the API answers with, its HTTP status and title. The key is the last segment of the
 * `type` URI, so clients can switch on it.
 */
export const PROBLEMS = {
  'validation-error': { status: 400, title: 'The request is invalid' },
  'malformed-json': { status: 400, title: 'The request body is not valid JSON' },
  'json-too-deep': { status: 400, title: 'The request body nests JSON deeper than allowed' },
  unauthorized: { status: 401, title: 'A valid API key is required' },
  forbidden: { status: 403, title: 'The API key lacks the scope this operation needs' },
  'not-found': { status: 404, title: 'No such resource' },
  'method-not-allowed': { status: 405, title: 'The method is not allowed on this resource' },
  'idempotency-conflict': {
    status: 409,
    title: 'A request with this Idempotency-Key is still in progress',
  },
  'payload-too-large': { status: 413, title: 'A message payload exceeds the size limit' },
  'body-too-large': { status: 413, title: 'The request body exceeds the size limit' },
  'unsupported-media-type': { status: 415, title: 'The request body must be application/json' },
  'idempotency-key-reused': {
    status: 422,
    title: 'The Idempotency-Key was already used with a different request',
  },
  'rate-limited': { status: 429, title: 'Too many requests for this API key' },
  'internal-error': { status: 500, title: 'Internal error' },
  'service-unavailable': { status: 503, title: 'A dependency is unavailable; retry later' },
  'delivery-unknown': {
    status: 504,
    title: 'The connection server was lost or silent mid-request; the message may have been delivered',
  },
  'quota-exceeded': { status: 507, title: 'The API key has reached its quota of stored messages' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ProblemCode = keyof typeof PROBLEMS;

const problemType = (code: ProblemCode): string => problemTypeUri(code);

/**
 * The answer while the device registry may be incomplete (`RegistryIncompleteError`): a device
 * not found may be connected and not written back yet, so it is "retry in a second", never a 404
 * or `online: false`.
 */
export function registryRestoringProblem(cause: unknown): ProblemError {
  return new ProblemError(
    'service-unavailable',
    'The device registry is being restored (Redis lost it or was unreachable); the device may be connected. Retry in a second.',
    { retryAfterSeconds: 1, cause },
  );
}

/** An error that maps to one problem response. Throw it from any handler or middleware. */
export class ProblemError extends Error {
  override readonly name = 'ProblemError';
  readonly code: ProblemCode;
  readonly status: number;
  readonly errors: readonly FieldError[] | undefined;
  readonly retryAfterSeconds: number | undefined;
  /** Methods for the `Allow` header of a 405. */
  readonly allow: readonly string[] | undefined;

  constructor(
    code: ProblemCode,
    detail?: string,
    options: {
      errors?: readonly FieldError[];
      retryAfterSeconds?: number;
      allow?: readonly string[];
      cause?: unknown;
    } = {},
  ) {
    super(detail ?? PROBLEMS[code].title, options.cause === undefined ? {} : { cause: options.cause });
    this.code = code;
    this.status = PROBLEMS[code].status;
    this.errors = options.errors;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.allow = options.allow;
  }

  toProblem(instance: string): Problem {
    return {
      type: problemType(this.code),
      title: PROBLEMS[this.code].title,
      status: this.status,
      detail: this.message,
      instance,
      ...(this.errors ? { errors: [...this.errors] } : {}),
      ...(this.retryAfterSeconds !== undefined ? { retryAfterSeconds: this.retryAfterSeconds } : {}),
    };
  }
}

export function sendProblem(req: Request, res: Response, err: ProblemError): void {
  if (err.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(err.retryAfterSeconds));
  res
    .status(err.status)
    .type(PROBLEM_CONTENT_TYPE)
    .send(JSON.stringify(err.toProblem(req.path)));
}

/** Turns zod issues into field errors that name the field the way a client wrote it. */
export function fieldErrors(issues: readonly z.core.$ZodIssue[], location: FieldError['in']): FieldError[] {
  return flatten(issues, []).map((issue) => ({
    field: formatPath(issue.path) || '(root)',
    in: location,
    message: issue.message,
  }));
}

/**
 * A body that matches no member of a union (single message or batch) reports the member it came
 * closest to, so the client reads "messages[2].target.id: ..." rather than "invalid input".
 */
function flatten(
  issues: readonly z.core.$ZodIssue[],
  prefix: readonly PropertyKey[],
): { path: readonly PropertyKey[]; message: string }[] {
  return issues.flatMap((issue) => {
    const path = [...prefix, ...issue.path];
    if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      const closest = [...issue.errors].sort((a, b) => a.length - b.length)[0] ?? [];
      if (closest.length > 0) return flatten(closest, path);
    }
    return [{ path, message: issue.message }];
  });
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out;
}
