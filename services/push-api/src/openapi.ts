import { z } from 'zod';
import { FieldError, JsonPayload, PROBLEM_CONTENT_TYPE, Problem } from '@pushline/protocol';
import { PROBLEMS, type ProblemCode } from './problem.ts';
import type { RouteSpec, RouteTable } from './routing.ts';
import { COMPONENT_NAMES, type ApiSchemas } from './schemas.ts';

export const OPENAPI_PATH = '/v1/openapi.json';

/** Problems any authenticated operation can answer with. */
const AUTHENTICATED_PROBLEMS: readonly ProblemCode[] = [
  'unauthorized',
  'forbidden',
  'rate-limited',
  'internal-error',
];
/** Problems any operation with a body can answer with. */
const BODY_PROBLEMS: readonly ProblemCode[] = [
  'validation-error',
  'malformed-json',
  'body-too-large',
  'unsupported-media-type',
];

type JsonObject = Record<string, unknown>;

/** Express `/v1/devices/:deviceId/messages` → OpenAPI `/v1/devices/{deviceId}/messages`. */
export function openApiPath(expressPath: string): string {
  return expressPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/**
 * The OpenAPI 3.1 document of the API, generated from the route specs and the very zod schemas the
 * routes validate with (`z.toJSONSchema`, JSON Schema 2020-12 as OpenAPI 3.1 uses).
 */
function buildOpenApiDocument(
  specs: readonly RouteSpec[],
  schemas: ApiSchemas,
  info: { title: string; version: string; description?: string },
): JsonObject {
  const registry = z.registry<{ id: string }>();
  const refs = new Map<z.ZodType, string>();
  const register = (schema: z.ZodType, id: string) => {
    if (refs.has(schema)) return;
    registry.add(schema, { id });
    refs.set(schema, id);
  };
  register(JsonPayload, 'JsonValue');
  register(Problem, 'Problem');
  register(FieldError, 'FieldError');
  for (const [key, id] of Object.entries(COMPONENT_NAMES)) register(schemas[key as keyof ApiSchemas], id);
  register(schemas.OpenApiDocument, 'OpenApiDocument');

  const generated = z.toJSONSchema(registry, {
    uri: (id) => `#/components/schemas/${id}`,
    io: 'input',
    unrepresentable: 'any',
  });
  const components: JsonObject = {};
  for (const [id, schema] of Object.entries(generated.schemas))
    components[id] = stripMeta(schema as JsonObject);

  const ref = (schema: z.ZodType): JsonObject => {
    const id = refs.get(schema);
    if (!id) throw new Error('every request and response schema of a route must be a named component');
    return { $ref: `#/components/schemas/${id}` };
  };
  const inline = (schema: z.ZodType): JsonObject =>
    stripMeta(z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonObject);

  const paths: Record<string, Record<string, JsonObject>> = {};
  for (const spec of specs) {
    const operation: JsonObject = {
      operationId: spec.operationId,
      summary: spec.summary,
      ...(spec.description ? { description: spec.description } : {}),
      tags: [spec.tag],
      security: spec.scope === null ? [] : [{ bearerKey: [] }, { headerKey: [] }],
      ...(spec.scope === null ? {} : { 'x-pushline-scope': spec.scope }),
      parameters: [...pathParameters(spec, inline), ...headerParameters(spec, inline)],
      ...(spec.body
        ? {
            requestBody: {
              required: true,
              content: { 'application/json': { schema: ref(spec.body) } },
            },
          }
        : {}),
      responses: responses(spec, ref),
    };
    const path = openApiPath(spec.path);
    paths[path] ??= {};
    paths[path][spec.method] = operation;
  }

  return {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info,
    tags: [
      { name: 'push', description: 'Direct push with synchronous delivery feedback.' },
      { name: 'publish', description: 'Asynchronous publish through Kafka.' },
      { name: 'presence', description: 'Which devices are connected, and where.' },
      { name: 'meta', description: 'This document.' },
    ],
    paths,
    components: {
      schemas: components,
      securitySchemes: {
        bearerKey: {
          type: 'http',
          scheme: 'bearer',
          description:
            'An API key as `authorization: Bearer <key>`. Scopes: push, publish, presence, admin (admin implies all).',
        },
        headerKey: {
          type: 'apiKey',
          in: 'header',
          name: 'x-api-key',
          description: 'The same API key in `x-api-key`.',
        },
      },
    },
  };
}

function pathParameters(spec: RouteSpec, inline: (s: z.ZodType) => JsonObject): JsonObject[] {
  const shape = spec.params instanceof z.ZodObject ? (spec.params.shape as Record<string, z.ZodType>) : {};
  return Object.entries(shape).map(([name, schema]) => ({
    name,
    in: 'path',
    required: true,
    schema: inline(schema),
  }));
}

function headerParameters(spec: RouteSpec, inline: (s: z.ZodType) => JsonObject): JsonObject[] {
  return (spec.headers ?? []).map((header) => {
    const schema = inline(header.schema);
    const { description, ...rest } = schema;
    return {
      name: header.name,
      in: 'header',
      required: header.required ?? false,
      ...(typeof description === 'string' ? { description } : {}),
      schema: rest,
    };
  });
}

function responses(spec: RouteSpec, ref: (s: z.ZodType) => JsonObject): JsonObject {
  const out: Record<string, JsonObject> = {};
  for (const [status, response] of Object.entries(spec.responses)) {
    out[status] = {
      description: response.description,
      ...(response.headers
        ? {
            headers: Object.fromEntries(
              Object.entries(response.headers).map(([name, description]) => [
                name,
                { description, schema: { type: 'string' } },
              ]),
            ),
          }
        : {}),
      content: { 'application/json': { schema: ref(response.schema) } },
    };
  }
  const codes = problemCodes(spec);
  const byStatus = new Map<number, ProblemCode[]>();
  for (const code of codes)
    byStatus.set(PROBLEMS[code].status, [...(byStatus.get(PROBLEMS[code].status) ?? []), code]);
  for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
    const key = String(status);
    if (out[key]) {
      throw new Error(`${spec.operationId}: status ${status} is both a result and a problem`);
    }
    out[key] = {
      description: list.map((code) => `\`${code}\`: ${PROBLEMS[code].title}.`).join(' '),
      ...(status === 429 || status === 503 || list.includes('idempotency-conflict')
        ? {
            headers: {
              'Retry-After': { description: 'Seconds to wait before retrying.', schema: { type: 'integer' } },
            },
          }
        : {}),
      content: { [PROBLEM_CONTENT_TYPE]: { schema: { $ref: '#/components/schemas/Problem' } } },
    };
  }
  return out;
}

/** Every problem an operation may answer with. */
function problemCodes(spec: RouteSpec): Set<ProblemCode> {
  return new Set<ProblemCode>([
    ...(spec.scope === null ? [] : AUTHENTICATED_PROBLEMS),
    ...(spec.body ? BODY_PROBLEMS : ['validation-error' as const]),
    ...(spec.problems ?? []),
  ]);
}

/** Every HTTP status an operation declares (results and problems), as its OpenAPI document lists them. */
export function declaredStatuses(spec: RouteSpec): number[] {
  const statuses = new Set([
    ...Object.keys(spec.responses).map(Number),
    ...[...problemCodes(spec)].map((code) => PROBLEMS[code].status),
  ]);
  return [...statuses].sort((a, b) => a - b);
}

function stripMeta(schema: JsonObject): JsonObject {
  const { $schema: _schema, $id: _id, ...rest } = schema;
  return rest;
}

/** Serves the document at GET /v1/openapi.json (no key needed), built once from the table's routes. */
export function registerOpenApiRoute(
  table: RouteTable,
  schemas: ApiSchemas,
  info: { title: string; version: string; description?: string },
): void {
  let document: JsonObject | undefined;
  table.add(
    {
      method: 'get',
      path: OPENAPI_PATH,
      operationId: 'openApiDocument',
      summary: 'This OpenAPI 3.1 document',
      tag: 'meta',
      scope: null,
      params: schemas.NoParams,
      body: undefined,
      responses: { 200: { description: 'The OpenAPI document.', schema: schemas.OpenApiDocument } },
    },
    async () => {
      document ??= buildOpenApiDocument(table.specs, schemas, info);
      return { status: 200, body: document };
    },
  );
}
