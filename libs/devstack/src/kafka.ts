import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { spawnGuarded } from './guard.ts';
import type { GuardedProcess } from './guard.ts';
import { KAFKA_VERSION, ensureKafkaJars, requireJava } from './kafka-jars.ts';
import { fetchMetadataBrokers } from './kafka-probe.ts';
import { freePorts } from './ports.ts';
import { BindConflict, waitForReady } from './readiness.ts';
import { delay, noLog, withLogTails } from './util.ts';
import type { LogFn } from './util.ts';

export interface KafkaInstance {
  /** host:port bootstrap addresses, ready for a client's `brokers` option. */
  readonly brokers: string[];
  /** The broker's log4j2 log (INFO). JVM stdout/stderr go to `kafka.out` next to it. */
  readonly logFile: string;
  /** log.dirs of the broker; wiped and re-formatted by every startKafka (kept by restart()). */
  readonly dataDir: string;
  readonly workDir: string;
  /** pid of the java process (a new one after restart()). */
  readonly pid: number;
  /** Wall time from the call to startKafka until the broker answered, jar fetch excluded. */
  readonly startupMs: number;
  /**
   * kill -9 of the broker, as a crash looks to its clients (fault-injection tests). Ports, config
   * and data dir are kept for restart(). Resolves once the process is gone.
   */
  kill(): Promise<void>;
  /**
   * Starts the broker again on the same ports, config and data dir, without formatting it, so
   * topics, records and committed offsets survive (killing it first if it still runs). Resolves
   * once it serves Metadata again; rejects if the ports were taken meanwhile.
   */
  restart(): Promise<void>;
  /** Idempotent: every call returns the same promise. */
  stop(): Promise<void>;
}

export interface StartKafkaOptions {
  cacheDir?: string;
  /** Default: a fresh temp dir, removed again by stop(). A given dir is kept (its kafka-data is reset). */
  workDir?: string;
  log?: LogFn;
  /** Bound on formatting plus startup until the broker serves Metadata. Default 60 s. */
  startTimeoutMs?: number;
  /** Grace after SIGTERM before SIGKILL. Default 10 s. */
  stopTimeoutMs?: number;
  /** Extra or overriding server.properties entries. */
  brokerProperties?: Readonly<Record<string, string | number | boolean>>;
  /** Default ['-Xms256m', '-Xmx1g']. */
  heapOptions?: readonly string[];
}

const HOST = '127.0.0.1';
const NODE_ID = 1;
const MAX_BIND_ATTEMPTS = 3;

/**
 * A cluster id in Kafka's own format (Uuid.randomUuid: random v4 UUID, base64url without padding,
 * never starting with '-'), made here instead of by `StorageTool random-uuid` to save a JVM start.
 */
export function randomClusterId(): string {
  for (;;) {
    const bytes = randomBytes(16);
    bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
    bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
    const id = bytes.toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

function serverProperties(
  port: number,
  controllerPort: number,
  dataDir: string,
  extra: Readonly<Record<string, string | number | boolean>>,
): string {
  return renderProperties(
    nodeProperties({
      nodeId: NODE_ID,
      port,
      controllerPort,
      dataDir,
      quorum: { 'controller.quorum.bootstrap.servers': `${HOST}:${controllerPort}` },
      nodes: 1,
    }),
    extra,
  );
}

/** A combined broker+controller node on loopback; `nodes` sizes the internal topics' replication. */
export function nodeProperties(o: {
  nodeId: number;
  port: number;
  controllerPort: number;
  dataDir: string;
  quorum: Readonly<Record<string, string>>;
  nodes: number;
}): Record<string, string | number | boolean> {
  const replicas = Math.min(3, o.nodes);
  const minIsr = Math.min(2, o.nodes);
  return {
    'process.roles': 'broker,controller',
    'node.id': o.nodeId,
    ...o.quorum,
    listeners: `PLAINTEXT://${HOST}:${o.port},CONTROLLER://${HOST}:${o.controllerPort}`,
    'advertised.listeners': `PLAINTEXT://${HOST}:${o.port},CONTROLLER://${HOST}:${o.controllerPort}`,
    'inter.broker.listener.name': 'PLAINTEXT',
    'controller.listener.names': 'CONTROLLER',
    'listener.security.protocol.map': 'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
    'log.dirs': o.dataDir,
    'num.partitions': 1,
    // Topics are created explicitly by the services; a typo must fail, not create a topic.
    'auto.create.topics.enable': false,
    // The internal topics get what the cluster can hold: a single node cannot satisfy the default
    // replication factor of 3 (consumer groups would fail with "coordinator not available").
    'offsets.topic.replication.factor': replicas,
    'transaction.state.log.replication.factor': replicas,
    'transaction.state.log.min.isr': minIsr,
    'share.coordinator.state.topic.replication.factor': replicas,
    'share.coordinator.state.topic.min.isr': minIsr,
    // Tests join groups one consumer at a time; waiting 3 s for more members only slows them.
    'group.initial.rebalance.delay.ms': 0,
    // Internal topics are created on first use (first consumer group, first transaction); with the
    // default 50 partitions the first group join took ~2.4 s here, with 8 about 0.6 s.
    'offsets.topic.num.partitions': 8,
    'transaction.state.log.num.partitions': 8,
    'share.coordinator.state.topic.num.partitions': 8,
  };
}

export function renderProperties(
  props: Readonly<Record<string, string | number | boolean>>,
  extra: Readonly<Record<string, string | number | boolean>> = {},
): string {
  return `${Object.entries({ ...props, ...extra })
    .map(([k, v]) => `${k}=${String(v)}`)
    .join('\n')}\n`;
}

export function log4j2Properties(logFile: string): string {
  return [
    'status = warn',
    // Kafka logs its own shutdown from a JVM shutdown hook; log4j's hook would close the file first.
    'shutdownHook = disable',
    'appender.file.type = File',
    'appender.file.name = file',
    `appender.file.fileName = ${logFile}`,
    'appender.file.layout.type = PatternLayout',
    'appender.file.layout.pattern = [%d] %p %m (%c)%n',
    'rootLogger.level = INFO',
    'rootLogger.appenderRef.file.ref = file',
    // Each config object dumps all its ~200 settings at INFO; that is most of a startup log.
    'logger.config.name = org.apache.kafka.common.config.AbstractConfig',
    'logger.config.level = WARN',
    '',
  ].join('\n');
}

export function jvmArgs(
  libsDir: string,
  log4jFile: string,
  workDir: string,
  heap: readonly string[],
): string[] {
  return [
    ...heap,
    // Kafka's own defaults from kafka-run-class.sh.
    '-XX:+UseG1GC',
    '-XX:MaxGCPauseMillis=20',
    '-XX:InitiatingHeapOccupancyPercent=35',
    '-XX:+ExplicitGCInvokesConcurrent',
    '-Djava.awt.headless=true',
    `-Dlog4j2.configurationFile=${log4jFile}`,
    `-Dkafka.logs.dir=${workDir}`,
    '-cp',
    `${libsDir}/*`,
  ];
}

export async function startKafka(opts: StartKafkaOptions = {}): Promise<KafkaInstance> {
  const log = opts.log ?? noLog;
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
  const libsDir = await ensureKafkaJars({
    ...(opts.cacheDir !== undefined ? { cacheDir: opts.cacheDir } : {}),
    log,
  });
  const java = await requireJava();

  const started = performance.now();
  const deadline = Date.now() + startTimeoutMs;
  const ownsWorkDir = opts.workDir === undefined;
  const workDir =
    opts.workDir === undefined
      ? await mkdtemp(path.join(tmpdir(), 'pushline-kafka-'))
      : path.resolve(opts.workDir);
  await mkdir(workDir, { recursive: true });
  const dataDir = path.join(workDir, 'kafka-data');
  const propsFile = path.join(workDir, 'server.properties');
  const log4jFile = path.join(workDir, 'log4j2.properties');
  const logFile = path.join(workDir, 'kafka.log');
  const outFile = path.join(workDir, 'kafka.out');
  const formatOutFile = path.join(workDir, 'kafka-format.out');
  const logs = [logFile, outFile, formatOutFile];
  const orphanCleanupDir = ownsWorkDir ? workDir : undefined;
  const jvm = jvmArgs(libsDir, log4jFile, workDir, opts.heapOptions ?? ['-Xms256m', '-Xmx1g']);
  await writeFile(log4jFile, log4j2Properties(logFile));

  try {
    for (let attempt = 1; ; attempt++) {
      const [port, controllerPort] = await freePorts(2, HOST);
      if (port === undefined || controllerPort === undefined) throw new Error('no free ports');
      // Stale logs would make a later failure look like this attempt's bind conflict.
      await Promise.all([dataDir, ...logs].map((p) => rm(p, { recursive: true, force: true })));
      await writeFile(
        propsFile,
        serverProperties(port, controllerPort, dataDir, opts.brokerProperties ?? {}),
      );

      // Guarded like the broker so that even this short-lived JVM cannot outlive us.
      const formatStarted = performance.now();
      const format = await spawnGuarded({
        command: java,
        args: [
          ...jvm,
          'kafka.tools.StorageTool',
          'format',
          '--standalone',
          '-t',
          randomClusterId(),
          '-c',
          propsFile,
        ],
        outFile: formatOutFile,
        orphanCleanupDir,
      });
      const formatted = await Promise.race([
        format.exited,
        delay(Math.max(deadline - Date.now(), 0), format.exited),
      ]);
      if (formatted === undefined) {
        await format.stop(2_000);
        throw new Error(
          await withLogTails(`Kafka storage format did not finish within ${startTimeoutMs} ms`, logs),
        );
      }
      if (formatted.code !== 0) {
        throw new Error(
          await withLogTails(`Kafka storage format failed (exit code ${formatted.code})`, logs),
        );
      }

      log(`kafka: formatted ${dataDir} in ${Math.round(performance.now() - formatStarted)} ms`);

      const launch = async (launchDeadline: number, timeoutMs: number): Promise<GuardedProcess> => {
        const proc = await spawnGuarded({
          command: java,
          args: [...jvm, 'kafka.Kafka', propsFile],
          outFile,
          orphanCleanupDir,
        });
        log(
          `kafka ${KAFKA_VERSION}: java pid ${proc.pid} starting on ${HOST}:${port} (controller ${controllerPort})`,
        );
        try {
          await waitForReady({
            proc,
            name: 'Kafka',
            deadline: launchDeadline,
            startTimeoutMs: timeoutMs,
            logs,
            intervalMs: 200,
            probe: async (remaining) => {
              const brokers = await fetchMetadataBrokers(HOST, port, Math.min(2_000, remaining));
              if (brokers.some((b) => b.nodeId === NODE_ID && b.port === port)) return true;
              return `metadata lists brokers ${JSON.stringify(brokers)}`;
            },
          });
        } catch (err) {
          await proc.stop(2_000);
          throw err;
        }
        return proc;
      };
      let proc: GuardedProcess;
      try {
        proc = await launch(deadline, startTimeoutMs);
      } catch (err) {
        if (err instanceof BindConflict && attempt < MAX_BIND_ATTEMPTS) {
          log(`kafka: port ${port} or ${controllerPort} was taken meanwhile; retrying with new ports`);
          continue;
        }
        throw err;
      }

      const startupMs = Math.round(performance.now() - started);
      log(
        `kafka ${KAFKA_VERSION} ready at ${HOST}:${port} in ${startupMs} ms (pid ${proc.pid}, log ${logFile})`,
      );
      return makeInstance(proc, {
        relaunch: () => launch(Date.now() + startTimeoutMs, startTimeoutMs),
        brokers: [`${HOST}:${port}`],
        logFile,
        dataDir,
        workDir,
        startupMs,
        ownsWorkDir,
        stopTimeoutMs,
        log,
      });
    }
  } catch (err) {
    if (ownsWorkDir) await rm(workDir, { recursive: true, force: true });
    throw err;
  }
}

function makeInstance(
  first: GuardedProcess,
  o: {
    /** Starts the broker again with the same config and data dir, and waits until it serves. */
    relaunch: () => Promise<GuardedProcess>;
    brokers: string[];
    logFile: string;
    dataDir: string;
    workDir: string;
    startupMs: number;
    ownsWorkDir: boolean;
    stopTimeoutMs: number;
    log: LogFn;
  },
): KafkaInstance {
  let proc = first;
  let stopping: Promise<void> | undefined;
  // A stop() that arrives mid-restart waits for the new broker, so it stops that one too.
  let relaunching: Promise<unknown> = Promise.resolve();
  const kill = async (): Promise<void> => {
    if (proc.exitInfo() === undefined) {
      try {
        process.kill(proc.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    // The guardian exits once the broker is reaped.
    await proc.exited;
  };
  return {
    brokers: o.brokers,
    logFile: o.logFile,
    dataDir: o.dataDir,
    workDir: o.workDir,
    get pid() {
      return proc.pid;
    },
    startupMs: o.startupMs,
    async kill(): Promise<void> {
      await kill();
      o.log(`kafka: broker pid ${proc.pid} killed (SIGKILL)`);
    },
    async restart(): Promise<void> {
      if (stopping !== undefined) throw new Error('kafka: restart() after stop()');
      await kill();
      const t = performance.now();
      const next = o.relaunch();
      relaunching = next.catch(() => undefined);
      proc = await next;
      o.log(`kafka restarted in ${Math.round(performance.now() - t)} ms (pid ${proc.pid})`);
    },
    stop(): Promise<void> {
      stopping ??= (async () => {
        const t = performance.now();
        await relaunching;
        const exit = await proc.stop(o.stopTimeoutMs);
        if (o.ownsWorkDir) await rm(o.workDir, { recursive: true, force: true, maxRetries: 3 });
        o.log(
          `kafka stopped in ${Math.round(performance.now() - t)} ms (exit code ${exit.code}, signal ${exit.signal})`,
        );
      })();
      return stopping;
    },
  };
}
