import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { spawnGuarded, type GuardedProcess } from './guard.ts';
import { KAFKA_VERSION, ensureKafkaJars, requireJava } from './kafka-jars.ts';
import { fetchMetadataBrokers } from './kafka-probe.ts';
import { jvmArgs, log4j2Properties, nodeProperties, randomClusterId, renderProperties } from './kafka.ts';
import { freePorts } from './ports.ts';
import { BindConflict, waitForReady } from './readiness.ts';
import { delay, noLog, withLogTails } from './util.ts';
import type { LogFn } from './util.ts';

/** One broker (and controller) of a cluster, which a test can kill -9 and start again. */
export interface KafkaClusterNode {
  readonly nodeId: number;
  /** host:port of its broker listener. */
  readonly broker: string;
  /** pid of its java process now; undefined while it is down. */
  readonly pid: number | undefined;
  readonly logFile: string;
  /** kill -9: no controlled shutdown, its partitions' leaders move by election. Resolves once it exited. */
  kill(): Promise<void>;
  /** Starts it again on its data; resolves once it serves and the cluster lists it. */
  restart(): Promise<void>;
}

export interface KafkaCluster {
  /** Every node's broker address, for a client's bootstrap list. */
  readonly brokers: string[];
  readonly nodes: readonly KafkaClusterNode[];
  readonly workDir: string;
  /** Wall time from the call until every node served metadata listing the whole cluster. */
  readonly startupMs: number;
  /** Idempotent: every call returns the same promise. */
  stop(): Promise<void>;
}

export interface StartKafkaClusterOptions {
  /** Brokers, each also a controller (KRaft combined mode). At least 1; 3 is the usual. */
  readonly nodes: number;
  readonly cacheDir?: string;
  /** Default: a fresh temp dir, removed again by stop(). A given dir is kept (its data is reset). */
  readonly workDir?: string;
  readonly log?: LogFn;
  /** Bound on formatting plus starting every node. Default 90 s. */
  readonly startTimeoutMs?: number;
  /** Grace after SIGTERM (controlled shutdown) before SIGKILL, per node. Default 10 s. */
  readonly stopTimeoutMs?: number;
  /** Extra or overriding server.properties entries, for every node. */
  readonly brokerProperties?: Readonly<Record<string, string | number | boolean>>;
  /**
   * JVM options of each node. Default: a small heap and the C1 compiler only, so that three JVMs
   * start in a few seconds and stay light on a small shared machine.
   */
  readonly jvmOptions?: readonly string[];
}

const HOST = '127.0.0.1';
const MAX_BIND_ATTEMPTS = 3;

/**
 * A KRaft cluster from the same jars as the single broker: `nodes` combined broker+controller
 * processes with a static voter set, each guarded so none outlives us. Internal topics replicate
 * min(3, nodes) ways with min.insync.replicas min(2, nodes); the platform's own topics get what
 * the platform asks for (the broker defaults, 1 and 1, are left alone so nothing hides that).
 * A fenced broker is noticed within broker.session.timeout.ms, lowered to 6 s here.
 */
export async function startKafkaCluster(opts: StartKafkaClusterOptions): Promise<KafkaCluster> {
  if (!Number.isInteger(opts.nodes) || opts.nodes < 1) throw new Error('a cluster needs at least one node');
  const log = opts.log ?? noLog;
  const startTimeoutMs = opts.startTimeoutMs ?? 90_000;
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
      ? await mkdtemp(path.join(tmpdir(), 'pushline-kafka-cluster-'))
      : path.resolve(opts.workDir);
  const orphanCleanupDir = ownsWorkDir ? workDir : undefined;
  const jvm = opts.jvmOptions ?? ['-Xms64m', '-Xmx384m', '-XX:TieredStopAtLevel=1'];
  const ids = Array.from({ length: opts.nodes }, (_, i) => i + 1);

  try {
    for (let attempt = 1; ; attempt++) {
      await rm(workDir, { recursive: true, force: true });
      const ports = await freePorts(2 * opts.nodes, HOST);
      const brokerPort = (id: number) => ports[id - 1] as number;
      const controllerPort = (id: number) => ports[opts.nodes + id - 1] as number;
      const voters = ids.map((id) => `${id}@${HOST}:${controllerPort(id)}`).join(',');
      const clusterId = randomClusterId();
      const nodes = await Promise.all(
        ids.map(async (id) => {
          const dir = path.join(workDir, `node-${id}`);
          await mkdir(dir, { recursive: true });
          const files = {
            dir,
            props: path.join(dir, 'server.properties'),
            log4j: path.join(dir, 'log4j2.properties'),
            log: path.join(dir, 'kafka.log'),
            out: path.join(dir, 'kafka.out'),
            formatOut: path.join(dir, 'kafka-format.out'),
          };
          await writeFile(files.log4j, log4j2Properties(files.log));
          await writeFile(
            files.props,
            renderProperties(
              {
                ...nodeProperties({
                  nodeId: id,
                  port: brokerPort(id),
                  controllerPort: controllerPort(id),
                  dataDir: path.join(dir, 'kafka-data'),
                  quorum: { 'controller.quorum.voters': voters },
                  nodes: opts.nodes,
                }),
                'broker.session.timeout.ms': 6_000,
                'broker.heartbeat.interval.ms': 1_000,
              },
              opts.brokerProperties ?? {},
            ),
          );
          return { id, files, args: jvmArgs(libsDir, files.log4j, files.dir, jvm) };
        }),
      );

      // Every node's storage, formatted with the cluster's id (static voters: no --standalone).
      const formatStarted = performance.now();
      await Promise.all(
        nodes.map(async (n) => {
          const format = await spawnGuarded({
            command: java,
            args: [...n.args, 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', n.files.props],
            outFile: n.files.formatOut,
            orphanCleanupDir,
          });
          const exit = await Promise.race([
            format.exited,
            delay(Math.max(deadline - Date.now(), 0), format.exited),
          ]);
          if (exit === undefined || exit.code !== 0) {
            await format.stop(2_000);
            throw new Error(await withLogTails(`formatting Kafka node ${n.id} failed`, [n.files.formatOut]));
          }
        }),
      );

      log(
        `kafka cluster: ${opts.nodes} nodes formatted in ${Math.round(performance.now() - formatStarted)} ms`,
      );
      const members = nodes.map((n) => {
        let proc: GuardedProcess | undefined;
        const logs = [n.files.log, n.files.out];
        const waitServing = (p: GuardedProcess, until: number) =>
          waitForReady({
            proc: p,
            name: `Kafka node ${n.id}`,
            deadline: until,
            startTimeoutMs,
            logs,
            intervalMs: 250,
            probe: async (remaining) => {
              const listed = await fetchMetadataBrokers(HOST, brokerPort(n.id), Math.min(2_000, remaining));
              const ids = new Set(listed.map((b) => b.nodeId));
              if (ids.has(n.id)) return true;
              return `metadata lists brokers ${JSON.stringify(listed)}`;
            },
          });
        const spawn = () =>
          spawnGuarded({
            command: java,
            args: [...n.args, 'kafka.Kafka', n.files.props],
            outFile: n.files.out,
            orphanCleanupDir,
          });
        const node: KafkaClusterNode & { start(until: number): Promise<void>; stop(): Promise<void> } = {
          nodeId: n.id,
          broker: `${HOST}:${brokerPort(n.id)}`,
          get pid() {
            return proc && proc.exitInfo() === undefined ? proc.pid : undefined;
          },
          logFile: n.files.log,
          async start(until) {
            proc = await spawn();
            await waitServing(proc, until);
          },
          async kill() {
            if (!proc || proc.exitInfo() !== undefined) return;
            process.kill(proc.pid, 'SIGKILL');
            await proc.exited;
          },
          async restart() {
            if (proc && proc.exitInfo() === undefined) throw new Error(`Kafka node ${n.id} is still running`);
            proc = await spawn();
            try {
              await waitServing(proc, Date.now() + startTimeoutMs);
            } catch (err) {
              await proc.stop(2_000);
              throw err;
            }
            log(`kafka node ${n.id} restarted (pid ${proc.pid})`);
          },
          async stop() {
            await proc?.stop(stopTimeoutMs);
          },
        };
        return node;
      });

      try {
        await Promise.all(members.map((m) => m.start(deadline)));
        // Each node serves; the cluster is whole once one of them lists every broker.
        await waitUntilWhole(members[0]?.broker ?? '', opts.nodes, deadline);
      } catch (err) {
        await Promise.all(members.map((m) => m.stop()));
        if (err instanceof BindConflict && attempt < MAX_BIND_ATTEMPTS) {
          log('kafka cluster: a port was taken meanwhile; retrying with new ports');
          continue;
        }
        throw err;
      }
      const startupMs = Math.round(performance.now() - started);
      const brokers = members.map((m) => m.broker);
      log(`kafka ${KAFKA_VERSION} cluster of ${opts.nodes} ready at ${brokers.join(',')} in ${startupMs} ms`);
      let stopping: Promise<void> | undefined;
      return {
        brokers,
        nodes: members,
        workDir,
        startupMs,
        stop() {
          stopping ??= (async () => {
            await Promise.all(members.map((m) => m.stop()));
            if (ownsWorkDir) await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
            log('kafka cluster stopped');
          })();
          return stopping;
        },
      };
    }
  } catch (err) {
    if (ownsWorkDir) await rm(workDir, { recursive: true, force: true });
    throw err;
  }
}

async function waitUntilWhole(broker: string, nodes: number, deadline: number): Promise<void> {
  const [host, port] = broker.split(':');
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const listed = await fetchMetadataBrokers(host ?? HOST, Number(port), 2_000);
      if (listed.length >= nodes) return;
      last = `${listed.length} of ${nodes} brokers listed`;
    } catch (err) {
      last = String(err);
    }
    // Re-check pace only: the loop ends when the cluster is whole or at the deadline.
    await delay(250);
  }
  throw new Error(`the Kafka cluster did not list all ${nodes} brokers in time (${last})`);
}
