import { z } from 'zod';
import { commonEnvShape, kafkaConsumerEnvShape } from './common.ts';
import { port, positiveInt } from './fields.ts';
import { apiKeys } from './push-api.ts';

// The console calls no internal endpoint: it has no use for the internal token.
const { PUSHLINE_INTERNAL_TOKEN: _internalToken, ...shared } = commonEnvShape;

/** A service instance whose /metrics the console scrapes. */
export interface ScrapeTarget {
  readonly name: string;
  readonly url: string;
}

/** `push-api=http://h:8080,message-processor=http://h:7080` → targets; a bare URL is named by its host:port. */
export function parseScrapeTargets(spec: string): ScrapeTarget[] {
  return spec
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean)
    .map((entry) => {
      const at = entry.indexOf('=');
      const url = (at < 0 ? entry : entry.slice(at + 1)).replace(/\/+$/, '');
      return { name: at < 0 ? new URL(url).host : entry.slice(0, at), url };
    });
}

const scrapeTargets = z
  .string()
  .refine((spec) => {
    try {
      return parseScrapeTargets(spec).every((t) => /^https?:$/.test(new URL(t.url).protocol) && t.name);
    } catch {
      return false;
    }
  }, 'must be a comma-separated list of name=http(s)://host:port')
  .transform(parseScrapeTargets)
  .default([]);

export const consoleEnv = z.object({
  ...shared,
  ...kafkaConsumerEnvShape,
  PUSHLINE_CONSOLE_HOST: z.string().default('127.0.0.1').describe('Interface the operator console binds to.'),
  PUSHLINE_CONSOLE_PORT: port(8090).describe(
    'Port of the operator console (/console) and the demo device (/demo). 0 picks a free port.',
  ),
  PUSHLINE_CONSOLE_API_URL: z
    .url({ protocol: /^https?$/ })
    .default('http://127.0.0.1:8080')
    .describe("Base URL of a push-api, which the console calls with the operator's key for test pushes."),
  PUSHLINE_CONSOLE_SCRAPE_URLS: scrapeTargets.describe(
    'Ops URLs whose /metrics the console reads besides the connection servers (found through their load reports): `push-api=http://h:8080,message-processor=http://h:7080`.',
  ),
  PUSHLINE_CONSOLE_JAEGER_URL: z
    .url({ protocol: /^https?$/ })
    .optional()
    .describe('Jaeger UI base URL; when set, test pushes link to their trace.'),
  PUSHLINE_CONSOLE_REFRESH_MS: positiveInt(1000).describe(
    'How often the console reads load reports and metrics while an operator is watching.',
  ),
  PUSHLINE_CONSOLE_SESSION_TTL_S: positiveInt(43200).describe('How long a console sign-in lasts.'),
  PUSHLINE_API_KEYS: apiKeys.describe(
    'API keys and their scopes: `key1:push+publish+presence,key2:admin`. Keys are at least 16 characters of [A-Za-z0-9._~-]. Scopes: push, publish, presence, admin (admin implies the others).',
  ),
});
export type ConsoleConfig = z.infer<typeof consoleEnv>;
