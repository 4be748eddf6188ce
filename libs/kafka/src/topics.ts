import type { TopicSpec } from './types.ts';

/** The topics the platform creates at boot (auto-creation is off on our brokers). */
export function platformTopics(
  names: { connectionEvents: string; pushRequests: string; pushRequestsDlq: string; deliveryEvents: string },
  partitions: number,
): TopicSpec[] {
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
