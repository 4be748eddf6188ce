import type { z } from 'zod';

/** Thrown at boot when an environment variable is missing or invalid. The message names every bad variable. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly variables: readonly string[];
  constructor(issues: readonly { variable: string; message: string }[]) {
    super(`invalid configuration: ${issues.map((i) => `${i.variable}: ${i.message}`).join('; ')}`);
    this.variables = issues.map((i) => i.variable);
  }
}

export type EnvSchema = z.ZodObject<Record<string, z.ZodType>>;

/**
 * Parses the variables a schema declares out of `env`. Empty strings count as unset, so that
 * `FOO=` in a compose file or shell falls back to the documented default.
 */
export function parseEnv<S extends EnvSchema>(schema: S, env: NodeJS.ProcessEnv): z.infer<S> {
  const picked: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const value = env[key];
    if (value !== undefined && value !== '') picked[key] = value;
  }
  const result = schema.safeParse(picked);
  if (result.success) return result.data;
  throw new ConfigError(
    result.error.issues.map((issue) => ({
      variable: String(issue.path[0] ?? '(env)'),
      message: issue.message,
    })),
  );
}

export interface EnvVarDoc {
  readonly name: string;
  readonly description: string;
  readonly default: string | undefined;
  readonly required: boolean;
}

/** Lists the variables of a schema with their description and default, for docs and checks. */
export function describeEnv(schema: EnvSchema): EnvVarDoc[] {
  return Object.entries(schema.shape).map(([name, field]) => {
    const parsed = field.safeParse(undefined);
    const fallback = parsed.success ? parsed.data : undefined;
    return {
      name,
      description: field.description ?? '',
      default: fallback === undefined ? undefined : formatDefault(fallback),
      required: !parsed.success,
    };
  });
}

function formatDefault(value: unknown): string {
  if (Array.isArray(value)) return value.join(',');
  if (typeof value === 'object' && value !== null) return JSON.stringify(value);
  return String(value);
}
