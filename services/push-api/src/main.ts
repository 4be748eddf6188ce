import { parseEnv, pushApiEnv } from '@pushline/config';
import { runMain } from '@pushline/runtime';
import { createLogger, startTracing } from '@pushline/telemetry';
import { assemblePushApi, pushApiInstanceId } from './assemble.ts';

const config = parseEnv(pushApiEnv, process.env);
const instanceId = pushApiInstanceId(config);
const tracing = startTracing({ serviceName: 'pushline-push-api', instanceId });
const logger = createLogger({ service: 'push-api', level: config.PUSHLINE_LOG_LEVEL, base: { instanceId } });

runMain({
  name: 'push-api',
  shutdownDeadlineMs: config.PUSHLINE_SHUTDOWN_DEADLINE_MS,
  logger,
  boot: async () => {
    const service = assemblePushApi(config, { logger, tracing });
    await service.start();
    return service;
  },
});
