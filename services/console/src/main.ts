import { consoleEnv, parseEnv } from '@pushline/config';
import { runMain } from '@pushline/runtime';
import { createLogger } from '@pushline/telemetry';
import { assembleConsole } from './assemble.ts';

const config = parseEnv(consoleEnv, process.env);
const logger = createLogger({ service: 'console', level: config.PUSHLINE_LOG_LEVEL });

runMain({
  name: 'console',
  shutdownDeadlineMs: config.PUSHLINE_SHUTDOWN_DEADLINE_MS,
  logger,
  boot: async () => {
    const service = assembleConsole(config, { logger });
    await service.start();
    return service;
  },
});
