import type { ProcessRef } from './memory.ts';

/** What a scenario needs from a system under test; implemented by the baseline and by Pushline. */

type TargetName = 'baseline' | 'pushline';

/** An HTTP endpoint the HTTP load generator can drive; see HttpLoadArgs for the placeholders. */
export interface HttpPushSpec {
  readonly label: string;
  readonly baseUrl: string;
  readonly pathTemplate: string;
  readonly headers: Record<string, string>;
  readonly bodyTemplate: string;
}

export interface MemorySample {
  readonly rssBytes: number;
  /** undefined when the process does not expose its heap. */
  readonly heapUsedBytes: number | undefined;
}

export interface BroadcastAnswer {
  readonly delivered: number;
  readonly latencyMs: number;
}

export interface Target {
  readonly name: TargetName;
  /** socket.io URLs devices connect to, one per server process. */
  readonly deviceUrls: readonly string[];
  /**
   * Event-loop delay of each device-holding server since the previous call (the first call
   * starts the window): max and p99 in ms, by server name.
   */
  eventLoopDelay(): Promise<Record<string, { maxMs: number; p99Ms: number }>>;
  /** Memory of the server process behind deviceUrls[index]. */
  memory(index: number): Promise<MemorySample>;
  /** Direct pushes with synchronous feedback; the first is the headline route. */
  readonly directPush: readonly HttpPushSpec[];
  /** Every server-side process of the target (services, Redis, Kafka), for CPU accounting. */
  processes(): ProcessRef[];
  /**
   * Writes a heap snapshot of the server behind deviceUrls[index] as `<label>.heapsnapshot` and
   * resolves with its path; only present when the target was started for heap snapshots.
   */
  heapSnapshot?(index: number, label: string): Promise<string>;
  /** One broadcast to a topic's subscribers on every server; resolves with the acked count. */
  broadcast(topic: string, payload: unknown): Promise<BroadcastAnswer>;
  close(): Promise<void>;
}
