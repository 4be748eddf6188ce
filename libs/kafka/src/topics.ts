import type { KafkaClient, TopicSpec } from './types.ts';

/** The names of the platform's topics (`topicNames()` of @pushline/config). */
export interface PlatformTopicNames {
  readonly connectionEvents: string;
  readonly pushRequests: string;
  readonly pushRequestsDlq: string;
  readonly deliveryEvents: string;
}

/** The topics the platform creates at boot (auto-creation is off on our brokers). */
function platformTopics(names: PlatformTopicNames, partitions: number): TopicSpec[] {
  return [
    { name: names.connectionEvents, partitions },
    { name: names.pushRequests, partitions },
    // The DLQ is read by people and tools, not by throughput: a few partitions, long retention.
    {
      name: names.pushRequestsDlq,
      partitions: Math.min(partitions, 3),
      config: { 'retention.ms': String(14 * 24 * 3600 * 1000) },
    },
    { name: names.deliveryEvents, partitions },
  ];
}

/**
 * Creates the platform's topics that are missing (what every service does at boot: auto-creation
 * is off on the brokers), through an admin of its own that also applies the replication check.
 */
export async function ensurePlatformTopics(
  kafka: Pick<KafkaClient, 'admin'>,
  names: PlatformTopicNames,
  partitions: number,
): Promise<void> {
  const admin = kafka.admin();
  try {
    await admin.ensureTopics(platformTopics(names, partitions));
  } finally {
    await admin.close();
  }
}
