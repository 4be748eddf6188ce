import type { Express, Request, RequestHandler, Response } from 'express';
import type { z } from 'zod';
import { context } from '@pushline/telemetry';
import type { Logger } from '@pushline/telemetry';
import { requireScope, type ApiScope } from './auth.ts';
import { traceContextOf } from './http-telemetry.ts';
import { checkBodyDepth } from './payload.ts';
import { ProblemError, fieldErrors, type ProblemCode } from './problem.ts';

interface HeaderSpec {
  readonly name: string;
  readonly schema: z.ZodType<string | undefined>;
  readonly required?: boolean;
}

interface ResponseSpec {
  readonly description: string;
  readonly schema: z.ZodType;
  /** Response headers worth documenting (name → description). */
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * One operation of the API: how express routes it, what it validates, and what it documents.
 * The OpenAPI document is generated from these, and a handler may only answer with a status it
 * declares, so the two cannot drift.
 */
export interface RouteSpec<
  P extends z.ZodType = z.ZodType,
  B extends z.ZodType | undefined = z.ZodType | undefined,
> {
  readonly method: 'get' | 'post';
  /** Express path template, e.g. `/v1/devices/:deviceId/messages`. */
  readonly path: string;
  readonly operationId: string;
  readonly summary: string;
  readonly description?: string;
  readonly tag: string;
  /** Scope the API key needs; `null` for a public operation (no key). */
  readonly scope: ApiScope | null;
  readonly params: P;
  readonly body: B;
  readonly headers?: readonly HeaderSpec[];
  readonly responses: Readonly<Record<number, ResponseSpec>>;
  /** Problems this operation may answer with besides the ones every operation shares. */
  readonly problems?: readonly ProblemCode[];
}

export interface ApiResult {
  readonly status: number;
  readonly body: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

interface HandlerInput<P, B> {
  readonly params: P;
  readonly body: B;
  readonly req: Request;
  readonly res: Response;
}

export type Handler<P extends z.ZodType, B extends z.ZodType | undefined> = (
  input: HandlerInput<z.output<P>, B extends z.ZodType ? z.output<B> : undefined>,
) => Promise<ApiResult>;

export interface RouteGuards {
  /** 401 without a valid key. */
  readonly authenticate: RequestHandler;
  /** 429 past the key's rate. */
  readonly rateLimit: RequestHandler;
  /** Parses a JSON body; runs after the guards, so anonymous callers cost no parsing. */
  readonly parseJson: RequestHandler;
  /** Deepest payload (PUSHLINE_MAX_JSON_DEPTH); bodies are bounded before validation walks them. */
  readonly maxPayloadDepth: number;
}

/** Registers operations on an express app and remembers them for the OpenAPI document. */
export class RouteTable {
  readonly #app: Express;
  readonly #guards: RouteGuards;
  readonly #logger: Logger;
  readonly #specs: RouteSpec[] = [];
  /** Answer kinds (`operationId status`) seen matching their schema. */
  readonly #conforming = new Set<string>();

  constructor(app: Express, guards: RouteGuards, logger: Logger) {
    this.#app = app;
    this.#guards = guards;
    this.#logger = logger;
  }

  get specs(): readonly RouteSpec[] {
    return this.#specs;
  }

  add<P extends z.ZodType, B extends z.ZodType | undefined>(
    spec: RouteSpec<P, B>,
    handler: Handler<P, B>,
  ): void {
    this.#specs.push(spec);
    const guards: RequestHandler[] =
      spec.scope === null
        ? []
        : [this.#guards.authenticate, this.#guards.rateLimit, requireScope(spec.scope)];
    if (spec.body) guards.push(this.#guards.parseJson);
    this.#app[spec.method](spec.path, ...guards, async (req: Request, res: Response) => {
      const params = parseOrThrow(spec.params, req.params, 'path');
      for (const header of spec.headers ?? [])
        parseOrThrow(header.schema, req.get(header.name), 'header', header.name);
      let body: unknown = undefined;
      if (spec.body) {
        if (!req.is('application/json')) {
          throw new ProblemError(
            'unsupported-media-type',
            'Send the body as JSON with `content-type: application/json`.',
          );
        }
        // JSON.parse is iterative; every walk after it (zod, JSON.stringify) is not.
        checkBodyDepth(req.body, this.#guards.maxPayloadDepth);
        body = parseOrThrow(spec.body, req.body, 'body');
      }
      const result = await context.with(traceContextOf(res), () =>
        handler({ params, body, req, res } as HandlerInput<
          z.output<P>,
          B extends z.ZodType ? z.output<B> : undefined
        >),
      );
      const declared = spec.responses[result.status];
      if (!declared) {
        throw new Error(`${spec.operationId} answered ${result.status}, which its spec does not declare`);
      }
      this.#checkResponse(spec.operationId, result.status, declared.schema, result.body);
      if (result.headers)
        for (const [name, value] of Object.entries(result.headers)) res.setHeader(name, value);
      // Straight to node's response: express's res.json adds nothing these answers need (no
      // ETag, no JSONP, a fixed content type), and its send path costs a header walk per answer.
      const text = JSON.stringify(result.body);
      res.writeHead(result.status, {
        'content-type': 'application/json; charset=utf-8',
        'content-length': Buffer.byteLength(text),
      });
      res.end(text);
    });
  }

  /**
   * Checks an answer against its documented schema until one of its kind (operation and status)
   * has passed. A handler builds each kind in one place from values validated on their way in (the
   * request, the transport's results), so a drift shows on the first answer; validating every
   * answer again would only repeat that work on the hot path.
   */
  #checkResponse(operationId: string, status: number, schema: z.ZodType, body: unknown): void {
    const kind = `${operationId} ${status}`;
    if (this.#conforming.has(kind)) return;
    const check = schema.safeParse(body);
    if (check.success) {
      this.#conforming.add(kind);
      return;
    }
    // A bug on our side: log it loudly, but the caller still gets the outcome it is owed.
    this.#logger.error(
      { operationId, status, issues: check.error.issues },
      'response does not match its documented schema',
    );
  }

  /** The methods registered for a concrete path, for 405 answers. */
  methodsFor(path: string): string[] {
    return this.#specs.filter((s) => templateRegex(s.path).test(path)).map((s) => s.method.toUpperCase());
  }
}

function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  location: 'body' | 'path' | 'header',
  name?: string,
): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const errors = fieldErrors(result.error.issues, location).map((e) =>
    name ? { ...e, field: e.field === '(root)' ? name : `${name}.${e.field}` } : e,
  );
  throw new ProblemError('validation-error', describeErrors(errors), { errors });
}

function describeErrors(errors: readonly { field: string; message: string }[]): string {
  const first = errors[0];
  if (!first) return 'The request is invalid.';
  const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
  return `${first.field}: ${first.message}${more}`;
}

const templates = new Map<string, RegExp>();
function templateRegex(template: string): RegExp {
  let re = templates.get(template);
  if (!re) {
    const escaped = template
      .split('/')
      .map((segment) => (segment.startsWith(':') ? '[^/]+' : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('/');
    re = new RegExp(`^${escaped}/?$`);
    templates.set(template, re);
  }
  return re;
}
