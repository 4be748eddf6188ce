import { createServer } from 'node:http';
import { topicNames, type ConsoleConfig } from '@pushline/config';
import { ensurePlatformTopics, serviceKafkaClient, type KafkaClient } from '@pushline/kafka';
import { RedisDeviceRegistry, closeRedis, serviceRedis, type RedisClient } from '@pushline/registry';
import { assemblyLifecycle, listenForUrl, type AssemblyOptions, type Component } from '@pushline/runtime';
import { createConsoleApp } from './app.ts';
import { KafkaFeeds } from './feeds.ts';
import { OverviewCollector } from './overview.ts';
import { ConsoleSessions } from './sessions.ts';
import { buildUiAssets } from './ui-assets.ts';

export interface AssembleConsoleOptions extends AssemblyOptions {
  /** The caller's (connected), left open by close(). Default: a client on PUSHLINE_REDIS_URL, owned. */
  readonly redis?: RedisClient;
  readonly kafka?: KafkaClient;
}

export interface AssembledConsole extends Component {
  /** Base URL (after start); the console is at `${url}/console`, the demo device at `${url}/demo`. */
  readonly url: string;
  /** True once the Kafka feeds are reading. */
  readonly ready: boolean;
}

/** The composition root of the console, used by main.ts and by tests alike. */
export function assembleConsole(config: ConsoleConfig, options: AssembleConsoleOptions): AssembledConsole {
  const logger = options.logger.child({ component: 'console' });
  const topics = topicNames(config.PUSHLINE_TOPIC_PREFIX);
  const { redis, owned: ownedRedis } = serviceRedis(options.redis, config, options.logger);
  const kafka = options.kafka ?? serviceKafkaClient(config, 'console', options.logger);
  const registry = new RedisDeviceRegistry({ redis, keyPrefix: config.PUSHLINE_KEY_PREFIX });
  const feeds = new KafkaFeeds({ kafka, topics, logger });
  const overview = new OverviewCollector({
    registry,
    scrapeTargets: config.PUSHLINE_CONSOLE_SCRAPE_URLS,
    refreshMs: config.PUSHLINE_CONSOLE_REFRESH_MS,
    logger,
  });
  const sessions = new ConsoleSessions(
    config.PUSHLINE_API_KEYS,
    config.PUSHLINE_CONSOLE_SESSION_TTL_S * 1000,
  );
  const http = createServer();
  let url: string | undefined;

  return {
    get url() {
      if (!url) throw new Error('console not started');
      return url;
    },
    get ready() {
      return url !== undefined && feeds.ready;
    },
    ...assemblyLifecycle({
      logger,
      tracing: options.tracing,
      async start() {
        const assets = await buildUiAssets();
        http.on(
          'request',
          createConsoleApp({
            config,
            sessions,
            overview,
            feeds,
            registry,
            assets,
            ready: () => feeds.ready,
            logger,
          }),
        );
        await ownedRedis?.connect();
        await ensurePlatformTopics(kafka, topics, config.PUSHLINE_KAFKA_PARTITIONS);
        await feeds.start();
        url = await listenForUrl(http, {
          port: config.PUSHLINE_CONSOLE_PORT,
          host: config.PUSHLINE_CONSOLE_HOST,
        });
        logger.info({ url: `${url}/console` }, 'console listening');
      },
      steps: [
        {
          name: 'http server',
          run: () =>
            new Promise<void>((resolve) => {
              if (!http.listening) return resolve();
              http.close(() => resolve());
              http.closeAllConnections();
            }),
        },
        { name: 'kafka feeds', run: () => feeds.close() },
        { name: 'redis', run: () => closeRedis(ownedRedis) },
      ],
    }),
  };
}
