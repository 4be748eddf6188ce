import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import kafkajs, { type Admin } from 'kafkajs';
import { topicNames } from '@pushline/config';
import { startKafkaCluster, type KafkaCluster } from '@pushline/devstack';
import { ensurePlatformTopics } from '@pushline/kafka';
import { collectRecords, recordJson, testKafkaClient, uniquePrefix, waitUntil } from '@pushline/testkit';
import { startPlatform, type Platform, type TestDevice } from '../support/platform.ts';

/**
 * The platform on a real three-broker KRaft cluster (libs/devstack, the same jars as the single
 * broker), one broker killed -9 in the middle of a publish stream and started again.
 */

const { ConfigResourceTypes, Kafka, logLevel } = kafkajs;

let cluster: KafkaCluster;
let admin: Admin;

before(async () => {
  cluster = await startKafkaCluster({ nodes: 3 });
  admin = new Kafka({
    clientId: 'failover-test',
    brokers: cluster.brokers,
    logLevel: logLevel.NOTHING,
  }).admin();
  await admin.connect();
});

after(async () => {
  await admin?.disconnect();
  await cluster?.stop();
});

async function minInsyncReplicas(topics: readonly string[]): Promise<Map<string, string | undefined>> {
  const described = await admin.describeConfigs({
    includeSynonyms: false,
    resources: topics.map((name) => ({
      type: ConfigResourceTypes.TOPIC,
      name,
      configNames: ['min.insync.replicas'],
    })),
  });
  return new Map(
    described.resources.map((r) => [
      r.resourceName,
      r.configEntries.find((e) => e.configName === 'min.insync.replicas')?.configValue,
    ]),
  );
}

/** Partitions (of `topics`) whose in-sync replicas are fewer than `replicas`. */
async function underReplicated(topics: readonly string[], replicas: number): Promise<string[]> {
  const { topics: meta } = await admin.fetchTopicMetadata({ topics: [...topics] });
  return meta.flatMap((t) =>
    t.partitions.filter((p) => p.isr.length < replicas).map((p) => `${t.name}/${p.partitionId}`),
  );
}

describe('a three-broker Kafka cluster', () => {
  it('gets the platform topics with replication factor 3 and min.insync.replicas 2', async () => {
    const topics = topicNames(`${uniquePrefix('kc-topics')}.`);
    const kafka = testKafkaClient('kc-topics', cluster.brokers);
    // What every service does at boot.
    await ensurePlatformTopics(kafka, topics, 3);
    const names = Object.values(topics);
    const { topics: meta } = await admin.fetchTopicMetadata({ topics: names });
    for (const t of meta) {
      for (const p of t.partitions) assert.equal(p.replicas.length, 3, `${t.name}/${p.partitionId} replicas`);
    }
    for (const [topic, minIsr] of await minInsyncReplicas(names)) {
      assert.equal(minIsr, '2', `${topic} min.insync.replicas`);
    }
  });

  it('keeps publishing through a broker killed -9: 202 or a bounded 503, nothing lost, back in sync after', async () => {
    const prefix = uniquePrefix('kc');
    const topics = topicNames(`${prefix}.`);
    // Created the way every service does at boot (the other test checks the replication and
    // min.insync.replicas this gives), before the platform starts, so this test is about the
    // failover alone. The platform's admin also rides out the window in which a fresh topic's
    // metadata has not reached every broker (UNKNOWN_TOPIC_OR_PARTITION), which a bare
    // createTopics with waitForLeaders does not.
    await ensurePlatformTopics(testKafkaClient('kc-setup', cluster.brokers), topics, 3);
    let platform: Platform | undefined;
    try {
      platform = await startPlatform(prefix, { servers: 1, kafkaBrokers: cluster.brokers, prefix });
      const p = platform;
      const [server] = p.servers;
      assert.ok(server);
      const devices: TestDevice[] = [];
      for (let i = 0; i < 5; i++) devices.push(await p.connect(server, `dev-${i}`, `user-${i}`));

      // The broker that leads most push-requests partitions goes: their leaders must move.
      const { topics: before } = await admin.fetchTopicMetadata({ topics: [topics.pushRequests] });
      const leaders = (before[0]?.partitions ?? []).map((part) => part.leader);
      const victimId = [1, 2, 3].sort(
        (a, b) => leaders.filter((l) => l === b).length - leaders.filter((l) => l === a).length,
      )[0] as number;
      const victim = cluster.nodes[victimId - 1];
      assert.ok(victim);

      const TOTAL = 200;
      const KILL_AT = 40;
      const DEADLINE_MS = 35_000;
      const outcomes: { seq: number; status: number | 'hang'; ids: string[]; afterKill: boolean }[] = [];
      let next = 0;
      let killed: Promise<void> | undefined;
      const publishOne = async (seq: number) => {
        const afterKill = killed !== undefined;
        try {
          const res = await fetch(`${p.api.url}/v1/publish`, {
            method: 'POST',
            headers: { authorization: `Bearer ${p.apiKey}`, 'content-type': 'application/json' },
            body: JSON.stringify({ target: { type: 'device', id: `dev-${seq % 5}` }, payload: { seq } }),
            // Kafka's own timeouts (request 30 s) bound a publish; past this it hangs.
            signal: AbortSignal.timeout(DEADLINE_MS),
          });
          const body = (await res.json()) as { ids?: string[] };
          outcomes.push({ seq, status: res.status, ids: body.ids ?? [], afterKill });
        } catch {
          outcomes.push({ seq, status: 'hang', ids: [], afterKill });
        }
      };
      // Four publishers in a row each, so a slow answer during the election does not stop the stream.
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          for (let seq = next++; seq < TOTAL; seq = next++) {
            if (seq === KILL_AT) killed = victim.kill();
            await publishOne(seq);
          }
        }),
      );
      await killed;

      const statuses = outcomes.map((o) => o.status);
      assert.deepEqual(
        statuses.filter((s) => s !== 202 && s !== 503),
        [],
        'every publish answered 202 or 503 within the bound',
      );
      const accepted = outcomes.filter((o) => o.status === 202);
      const acceptedAfterKill = accepted.filter((o) => o.afterKill);
      assert.ok(
        acceptedAfterKill.length >= (TOTAL - KILL_AT) / 2,
        `publishing goes on without the broker: ${acceptedAfterKill.length} accepted after the kill, ${statuses.filter((s) => s === 503).length} refused`,
      );

      // Nothing accepted is lost: the processor delivers every accepted message, including those
      // accepted while the broker was down.
      const received = () => new Set(devices.flatMap((d) => d.received.map((m) => m.id)));
      const acceptedIds = accepted.flatMap((o) => o.ids);
      await waitUntil(() => acceptedIds.every((id) => received().has(id)), {
        timeoutMs: 60_000,
        intervalMs: 200,
        what: `all ${acceptedIds.length} accepted messages delivered (${acceptedIds.filter((id) => !received().has(id)).length} missing)`,
      });

      // Connection events go on: a device connecting with the broker down is announced.
      await p.connect(server, 'late-device', 'user-late');
      const events = await collectRecords(p.kafka, topics.connectionEvents, 1, {
        filter: (r) => (recordJson(r) as { deviceId?: string; type?: string }).deviceId === 'late-device',
        timeoutMs: 30_000,
      });
      assert.equal((recordJson(events[0] as never) as { type?: string }).type, 'connected');

      // The broker comes back and catches up: every partition in sync on all three again.
      await victim.restart();
      const watched = [...Object.values(topics), '__consumer_offsets'];
      await waitUntil(async () => (await underReplicated(watched, 3)).length === 0, {
        timeoutMs: 60_000,
        intervalMs: 500,
        what: 'every partition back to three in-sync replicas',
      });
      // And the processors' group has consumed everything that was produced.
      const groupId = `${prefix}-processors`;
      await waitUntil(
        async () => {
          const [ends, committed] = await Promise.all([
            admin.fetchTopicOffsets(topics.pushRequests),
            admin.fetchOffsets({ groupId, topics: [topics.pushRequests] }),
          ]);
          const done = new Map(committed[0]?.partitions.map((c) => [c.partition, Number(c.offset)]) ?? []);
          // A partition nothing was published to has no committed offset (-1).
          return ends.every(
            (e) => Number(e.high) - Math.max(done.get(e.partition) ?? -1, Number(e.low)) === 0,
          );
        },
        { timeoutMs: 30_000, intervalMs: 500, what: 'the processors to have committed every record' },
      );
    } finally {
      await platform?.close();
    }
  });
});
