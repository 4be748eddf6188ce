export type {
  Admin,
  BatchContext,
  Consumer,
  ConsumerOptions,
  IncomingRecord,
  KafkaClient,
  OutgoingRecord,
  PartitionLag,
  PartitionProgress,
  Producer,
  RecordBatch,
  SendOptions,
  TakenBatch,
  TopicSpec,
} from './types.ts';
export { createKafkaClient, serviceKafkaClient } from './kafkajs-client.ts';
export type { KafkaClientOptions } from './kafkajs-client.ts';
export { BufferedPublisher } from './buffered-publisher.ts';
export type { BufferedPublisherOptions } from './buffered-publisher.ts';
export { ensurePlatformTopics } from './topics.ts';
export type { PlatformTopicNames } from './topics.ts';
export { ProduceError, SendWithdrawnError } from './errors.ts';
export { LogScanTimeoutError } from './log-scan.ts';
export { partitionForKey } from './partitioner.ts';
export { UnderReplicatedTopicsError, replicationPlan } from './replication.ts';
export type { ReplicationPlan, ReplicationPolicy, TopicReplicationProblem } from './replication.ts';
