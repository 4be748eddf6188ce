import { messageProcessorEnv, parseEnv } from '@pushline/config';
import { runMain } from '@pushline/runtime';
import { createLogger, startTracing } from '@pushline/telemetry';
import { assembleMessageProcessor, processorInstanceId } from './assemble.ts';

const config = parseEnv(messageProcessorEnv, process.env);
// One id for traces, logs and metrics (and the processor's request claims).
const instanceId = processorInstanceId(config);
const logger = createLogger({ service: 'message-processor', level: config.PUSHLINE_LOG_LEVEL });

runMain({
  name: 'message-processor',
  shutdownDeadlineMs: config.PUSHLINE_SHUTDOWN_DEADLINE_MS,
  logger: logger.child({ instanceId }),
  boot: async () => {
    const tracing = startTracing({ serviceName: 'pushline-message-processor', instanceId });
    const service = assembleMessageProcessor(config, { logger, instanceId, tracing });
    await service.start();
    return service;
  },
});
