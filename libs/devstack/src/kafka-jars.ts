import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { spawnGuarded } from './guard.ts';
import { REPO_ROOT, defaultCacheDir, errnoCode, findOnPath, noLog, withLogTails } from './util.ts';
import type { LogFn } from './util.ts';

const execFileAsync = promisify(execFile);

/** Must equal <kafka.version> in libs/devstack/kafka/pom.xml (checked by ensureKafkaJars). See docs/decisions/0003-kafka-version.md. */
export const KAFKA_VERSION = '4.1.1';

/** Kafka 4.x brokers and tools need Java 17 (KIP-1013). */
const MIN_JAVA_MAJOR = 17;

const KAFKA_POM = path.join(REPO_ROOT, 'libs/devstack/kafka/pom.xml');
const MARKER = '.pushline-complete';

const ALTERNATIVES =
  'Alternatives: point Pushline at an existing cluster with PUSHLINE_KAFKA_BROKERS=host:port[,host:port], ' +
  'or run Kafka in containers with `docker compose up`.';

class KafkaToolingError extends Error {
  override name = 'KafkaToolingError';
}

function kafkaLibsDir(cacheDir: string = defaultCacheDir()): string {
  return path.join(cacheDir, `kafka-${KAFKA_VERSION}`, 'libs');
}

async function pomDigest(): Promise<{ pom: string; digest: string }> {
  const pom = await readFile(KAFKA_POM, 'utf8');
  const pinned = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom)?.[1];
  if (pinned !== KAFKA_VERSION) {
    throw new KafkaToolingError(
      `${KAFKA_POM} pins Kafka ${pinned ?? '(none)'} but KAFKA_VERSION is ${KAFKA_VERSION}; make them agree.`,
    );
  }
  return { pom, digest: createHash('sha256').update(pom).digest('hex') };
}

async function markerMatches(libsDir: string, digest: string): Promise<boolean> {
  try {
    return (await readFile(path.join(libsDir, MARKER), 'utf8')).trim() === digest;
  } catch {
    return false;
  }
}

/**
 * Makes sure the broker jars are cached and returns the libs dir (use `<dir>/*` as classpath).
 * Runs mvn only when the cache is missing or was fetched with a different pom. The download lands
 * in a temp dir that is renamed into place only after it is complete and marked, so an interrupted
 * fetch is never mistaken for a finished one, and concurrent fetches cannot mix their files.
 */
export async function ensureKafkaJars(opts: { cacheDir?: string; log?: LogFn } = {}): Promise<string> {
  const log = opts.log ?? noLog;
  const libsDir = kafkaLibsDir(opts.cacheDir ?? defaultCacheDir());
  const { digest } = await pomDigest();
  if (await markerMatches(libsDir, digest)) return libsDir;

  const mvn = await findOnPath('mvn');
  if (mvn === undefined) {
    throw new KafkaToolingError(
      `Kafka ${KAFKA_VERSION} jars are not cached in ${libsDir} and Maven (mvn) is not on PATH to fetch them. ` +
        `Install Maven and Java ${MIN_JAVA_MAJOR}+ (Debian/Ubuntu: apt-get install -y maven openjdk-17-jre-headless). ${ALTERNATIVES}`,
    );
  }
  await requireJava();

  const versionDir = path.dirname(libsDir);
  await mkdir(versionDir, { recursive: true });
  await removeAbandonedDownloads(versionDir);
  // Staging holds the download and mvn's log; only its libs/ is renamed into place.
  const stagingDir = path.join(versionDir, `staging-${process.pid}-${randomBytes(4).toString('hex')}`);
  const tmpDir = path.join(stagingDir, 'libs');
  const mvnLog = path.join(stagingDir, 'mvn.log');
  await mkdir(tmpDir, { recursive: true });
  const started = Date.now();
  log(`fetching Kafka ${KAFKA_VERSION} jars from Maven Central into ${libsDir} (first run only)`);
  try {
    // Guarded so that a killed parent does not leave mvn downloading into an abandoned dir.
    const fetch = await spawnGuarded({
      command: mvn,
      args: ['-q', '-B', '-f', KAFKA_POM, 'dependency:copy-dependencies', `-DoutputDirectory=${tmpDir}`],
      outFile: mvnLog,
      orphanCleanupDir: stagingDir,
    });
    const exit = await fetch.exited;
    if (exit.code !== 0) {
      throw new KafkaToolingError(
        await withLogTails(`mvn could not fetch the Kafka jars (exit code ${exit.code}). ${ALTERNATIVES}`, [
          mvnLog,
        ]),
      );
    }
    const jars = await readdir(tmpDir);
    for (const required of [`kafka_2.13-${KAFKA_VERSION}.jar`, `kafka-clients-${KAFKA_VERSION}.jar`]) {
      if (!jars.includes(required)) {
        throw new KafkaToolingError(`mvn finished but ${required} is missing from ${tmpDir}`);
      }
    }
    await writeFile(path.join(tmpDir, MARKER), `${digest}\n`);
    if (await markerMatches(libsDir, digest)) return libsDir;
    await rm(libsDir, { recursive: true, force: true });
    try {
      await rename(tmpDir, libsDir);
    } catch (err) {
      // Another process finished the same fetch first; its copy is as good as ours.
      const code = errnoCode(err);
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await markerMatches(libsDir, digest)))
        return libsDir;
      throw err;
    }
  } finally {
    await rm(stagingDir, { recursive: true, force: true });
  }
  log(`fetched ${(await readdir(libsDir)).length - 1} jars in ${Date.now() - started} ms`);
  return libsDir;
}

/** Staging dirs of fetches whose process died (they carry its pid in their name). */
async function removeAbandonedDownloads(versionDir: string): Promise<void> {
  for (const name of await readdir(versionDir)) {
    const pid = Number(/^staging-(\d+)-/.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
    } catch (err) {
      if (errnoCode(err) === 'ESRCH') await rm(path.join(versionDir, name), { recursive: true, force: true });
    }
  }
}

let javaCheck: Promise<string> | undefined;

/** Path of a java binary of at least version 17; throws a KafkaToolingError naming alternatives otherwise. */
export function requireJava(): Promise<string> {
  javaCheck ??= (async () => {
    const javaHome = process.env['JAVA_HOME'];
    const java =
      (javaHome !== undefined && javaHome !== ''
        ? await findOnPath('java', { PATH: path.join(javaHome, 'bin') })
        : undefined) ?? (await findOnPath('java'));
    if (java === undefined) {
      throw new KafkaToolingError(
        `Java ${MIN_JAVA_MAJOR}+ is needed to run Kafka ${KAFKA_VERSION} locally but \`java\` is not on PATH ` +
          `(Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless). ${ALTERNATIVES}`,
      );
    }
    const { stderr, stdout } = await execFileAsync(java, ['-version']);
    const version = /version "([^"]+)"/.exec(`${stderr}${stdout}`)?.[1] ?? '';
    const parts = version.split('.');
    const major = Number(parts[0] === '1' ? parts[1] : parts[0]);
    if (!(major >= MIN_JAVA_MAJOR)) {
      throw new KafkaToolingError(
        `Kafka ${KAFKA_VERSION} needs Java ${MIN_JAVA_MAJOR}+ but ${java} is version ${version || 'unknown'}. ${ALTERNATIVES}`,
      );
    }
    return java;
  })();
  // A failed check is not cached, so installing java fixes the next call without a restart.
  javaCheck.catch(() => {
    javaCheck = undefined;
  });
  return javaCheck;
}
