/** How the platform's topics must be replicated, and what to do about existing ones that are not. */
export interface ReplicationPolicy {
  /**
   * Least replication factor an existing topic must have; `min.insync.replicas` must be at least
   * min(2, this). Default: min(3, brokers in the cluster), what the platform creates topics with.
   */
  readonly minReplicationFactor?: number;
  /** `warn`: log and go on; `refuse`: `ensureTopics` throws `UnderReplicatedTopicsError`. */
  readonly onUnderReplicated: 'warn' | 'refuse';
}

export interface ReplicationPlan {
  /** What missing topics are created with. */
  readonly create: { readonly replicationFactor: number; readonly minInsyncReplicas: number };
  /** What existing topics must have. */
  readonly require: { readonly replicationFactor: number; readonly minInsyncReplicas: number };
}

/**
 * Replication for a cluster of `brokers`: topics are created with min(3, brokers) replicas and
 * `min.insync.replicas` min(2, brokers), so an acks=all write survives the loss of a broker once
 * there are three. Existing topics must meet `minReplicationFactor` (default: the same) and
 * `min.insync.replicas` ≥ min(2, that).
 */
export function replicationPlan(brokers: number, minReplicationFactor?: number): ReplicationPlan {
  const known = Math.max(1, brokers);
  const create = { replicationFactor: Math.min(3, known), minInsyncReplicas: Math.min(2, known) };
  const requiredFactor = minReplicationFactor ?? create.replicationFactor;
  return {
    create,
    require: { replicationFactor: requiredFactor, minInsyncReplicas: Math.min(2, requiredFactor) },
  };
}

export interface TopicReplicationProblem {
  readonly topic: string;
  readonly replicationFactor: number;
  readonly minInsyncReplicas: number;
}

/** Existing topics replicated below the policy's minimum, with `PUSHLINE_KAFKA_REPLICATION_CHECK=refuse`. */
export class UnderReplicatedTopicsError extends Error {
  override readonly name = 'UnderReplicatedTopicsError';
  readonly problems: readonly TopicReplicationProblem[];

  constructor(
    problems: readonly TopicReplicationProblem[],
    required: { readonly replicationFactor: number; readonly minInsyncReplicas: number },
  ) {
    super(
      `topics below replication factor ${required.replicationFactor} / min.insync.replicas ${required.minInsyncReplicas}: ${problems
        .map((p) => `${p.topic} (${p.replicationFactor} / ${p.minInsyncReplicas})`)
        .join(', ')}`,
    );
    this.problems = problems;
  }
}
