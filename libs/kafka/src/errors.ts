/**
 * A send that Kafka did not acknowledge (after the client's own retries): the broker is down or
 * unreachable, the topic is missing, or the records were refused. Whether some of them were
 * written is unknown. Callers tell it from errors of their own logic by type, without knowing the
 * client underneath.
 */
export class ProduceError extends Error {
  override readonly name: string = 'ProduceError';
  readonly topic: string;
  readonly records: number;

  constructor(topic: string, records: number, cause: unknown) {
    super(
      `producing ${records} record(s) to ${topic} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
    this.topic = topic;
    this.records = records;
  }
}

/**
 * A send withdrawn by its caller (its signal aborted) before any of its records were handed to the
 * broker: unlike other `ProduceError`s, the outcome is known: nothing was written.
 */
export class SendWithdrawnError extends ProduceError {
  override readonly name = 'SendWithdrawnError';

  constructor(topic: string, records: number) {
    super(topic, records, new Error('withdrawn by the caller before it was sent'));
  }
}
