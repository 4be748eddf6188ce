import { canaryEnv, parseEnv } from '@pushline/config';
import { runMain } from '@pushline/runtime';
import { createLogger, startTracing } from '@pushline/telemetry';
import { assembleCanary, canaryInstanceId } from './assemble.ts';

const config = parseEnv(canaryEnv, process.env);
const instanceId = canaryInstanceId(config);
const logger = createLogger({ service: 'canary', level: config.PUSHLINE_LOG_LEVEL });

runMain({
  name: 'canary',
  shutdownDeadlineMs: config.PUSHLINE_SHUTDOWN_DEADLINE_MS,
  logger: logger.child({ instanceId }),
  boot: async () => {
    const tracing = startTracing({ serviceName: 'pushline-canary', instanceId });
    const service = assembleCanary(config, { logger, tracing });
    await service.start();
    return service;
  },
});
