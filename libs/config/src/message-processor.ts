import { z } from 'zod';
import { commonEnvShape } from './common.ts';
import { port, positiveInt } from './fields.ts';

export const messageProcessorEnv = z.object({
  ...commonEnvShape,
  PUSHLINE_PROCESSOR_GROUP_ID: z
    .string()
    .default('pushline-message-processor')
    .describe('Kafka consumer group of the message processors.'),
  PUSHLINE_PROCESSOR_HOST: z.string().default('127.0.0.1').describe('Interface of the ops port.'),
  PUSHLINE_PROCESSOR_PORT: port(7080).describe('Ops port: /healthz, /readyz, /metrics. 0 picks a free port.'),
  PUSHLINE_PROCESSOR_MAX_IN_FLIGHT: positiveInt(1000).describe('Deliveries in flight at once per processor.'),
  PUSHLINE_MAX_PAYLOAD_BYTES: positiveInt(4096).describe(
    'Largest payload a push request may carry (JSON bytes).',
  ),
  PUSHLINE_DELIVERY_TIMEOUT_MS: positiveInt(5000).describe('Time a device has to ack a message.'),
  PUSHLINE_OFFLINE_MAX_PER_DEVICE: positiveInt(100).describe('Stored messages kept per offline device.'),
  PUSHLINE_OFFLINE_SWEEP_MS: positiveInt(1000).describe(
    'How often expired stored messages are recorded as expired.',
  ),
});
export type MessageProcessorConfig = z.infer<typeof messageProcessorEnv>;
