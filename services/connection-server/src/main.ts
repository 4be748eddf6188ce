import { connectionServerEnv, parseEnv } from '@pushline/config';
import { runMain } from '@pushline/runtime';
import { createLogger, startTracing } from '@pushline/telemetry';
import { assembleConnectionServer, connectionServerId } from './assemble.ts';

const config = parseEnv(connectionServerEnv, process.env);
const serverId = connectionServerId(config);
// The server adds serverId to its own lines; a base field here would write the key twice.
const logger = createLogger({ service: 'connection-server', level: config.PUSHLINE_LOG_LEVEL });

runMain({
  name: 'connection-server',
  shutdownDeadlineMs: config.PUSHLINE_SHUTDOWN_DEADLINE_MS,
  logger: logger.child({ serverId }),
  boot: async () => {
    const tracing = startTracing({ serviceName: 'pushline-connection-server', instanceId: serverId });
    const service = assembleConnectionServer(config, { logger, tracing });
    await service.start();
    return service;
  },
});
