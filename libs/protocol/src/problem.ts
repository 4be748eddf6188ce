import { z } from 'zod';

/** Base of every problem `type`; the URI identifies the error class and never changes. */
export const PROBLEM_TYPE_BASE = 'https://pushline.dev/problems/';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** The `type` URI of the error class `code` (the URI's last segment, which clients switch on). */
export const problemTypeUri = (code: string): string => `${PROBLEM_TYPE_BASE}${code}`;

export const FieldError = z.object({
  field: z
    .string()
    .describe(
      'Where the error is: a dotted path into the body (`messages[0].target.id`) or a parameter name.',
    ),
  in: z.enum(['body', 'path', 'header']),
  message: z.string(),
});
export type FieldError = z.infer<typeof FieldError>;

/**
 * RFC 9457 problem details, as every Pushline HTTP error response carries them
 * (`application/problem+json`): the push-api, the console and the device port's 404.
 */
export const Problem = z.object({
  type: z.url().describe(`Stable URI of the error class, \`${PROBLEM_TYPE_BASE}<code>\`.`),
  title: z.string(),
  status: z.number().int(),
  detail: z.string().optional(),
  instance: z.string().describe('The request path.'),
  errors: z.array(FieldError).optional().describe('Validation errors, one per bad field.'),
  retryAfterSeconds: z.number().int().optional().describe('Set on 429 and 503, like the Retry-After header.'),
});
export type Problem = z.infer<typeof Problem>;
