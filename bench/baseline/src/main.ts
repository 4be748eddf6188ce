// Baseline server process: `node bench/baseline/src/main.ts`, configured by env, prints one JSON
// line `{"event":"listening","port":N}` on stdout once it accepts devices.
import { z } from 'zod';
import { startBaseline } from './app.ts';

const env = z
  .object({
    BASELINE_JWT_SECRET: z.string().min(32),
    BASELINE_PORT: z.coerce.number().int().min(0).max(65535).default(0),
  })
  .parse(process.env);

const server = await startBaseline({ jwtSecret: env.BASELINE_JWT_SECRET, port: env.BASELINE_PORT });
process.stdout.write(`${JSON.stringify({ event: 'listening', port: server.port, pid: process.pid })}\n`);

const stop = () => {
  server.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
