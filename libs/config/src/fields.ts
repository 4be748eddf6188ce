import { z } from 'zod';

/** Field builders shared by the service schemas, so every variable parses the same way. */
export const port = (fallback: number) => z.coerce.number().int().min(0).max(65535).default(fallback);

export const positiveInt = (fallback: number) => z.coerce.number().int().positive().default(fallback);

export const nonNegativeInt = (fallback: number) => z.coerce.number().int().min(0).default(fallback);

export const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'])
    .transform((v) => v === 'true' || v === '1' || v === 'yes')
    .default(fallback);

export const csv = (fallback: string[]) =>
  z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((part) => part.trim())
        .filter((part) => part.length > 0),
    )
    .pipe(z.array(z.string()).min(1, 'must list at least one value'))
    .default(fallback);

/**
 * Comma-separated `host:port` pairs, or unset (undefined). Hosts are names, IPv4 addresses or
 * bracketed IPv6 addresses; ports 1-65535.
 */
export const hostPorts = () =>
  z
    .string()
    .transform((s, ctx) => {
      const entries = s
        .split(',')
        .map((part) => part.trim())
        .filter((part) => part.length > 0);
      if (entries.length === 0) ctx.addIssue({ code: 'custom', message: 'must list at least one host:port' });
      for (const entry of entries) {
        const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(entry);
        const portNumber = Number(match?.[2]);
        if (!match || portNumber < 1 || portNumber > 65535) {
          ctx.addIssue({ code: 'custom', message: `${JSON.stringify(entry)} is not host:port` });
        }
      }
      return entries as readonly string[];
    })
    .optional();

export const logLevel = z
  .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
  .default('info');

/**
 * `kid:secret` pairs, comma-separated, into a map. A kid may not repeat, and a secret is at least
 * 32 characters (HS256 keys shorter than the hash are weak).
 */
export const hmacKeySet = z
  .string()
  .transform((text, ctx) => {
    const keys = new Map<string, string>();
    for (const entry of text.split(',').map((part) => part.trim())) {
      if (entry === '') continue;
      const colon = entry.indexOf(':');
      const kid = colon < 0 ? '' : entry.slice(0, colon);
      const secret = colon < 0 ? '' : entry.slice(colon + 1);
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(kid)) {
        ctx.addIssue({ code: 'custom', message: 'each entry is kid:secret, kid of 1-64 [A-Za-z0-9._-]' });
      } else if (secret.length < 32) {
        ctx.addIssue({ code: 'custom', message: `the secret of kid ${kid} must be at least 32 characters` });
      } else if (keys.has(kid)) {
        ctx.addIssue({ code: 'custom', message: `kid ${kid} is given twice` });
      } else {
        keys.set(kid, secret);
      }
    }
    return keys as ReadonlyMap<string, string>;
  })
  .optional();
