// `node bench/src/tools/kafka-idle.ts [--seconds=3] [--rounds=3]`: the CPU an idle kafkajs
// producer connection costs its process, with kafkajs as published and after `createKafkaClient`
// replaced its request queue's timer (`libs/kafka/src/request-queue-timer.ts`). Starts a broker
// from the cached jars, connects one producer, sends one record, then idles; prints, per round,
// the process's CPU ms per second idle and how often the queue looked for pending requests. The
// numbers behind "kafkajs's idle 1 ms timer" in docs/performance.md.
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import { startKafka } from '@pushline/devstack';
import { createKafkaClient } from '@pushline/kafka';
import { silentLogger } from '@pushline/telemetry';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' } },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);

// Counts the request queue's checks (kafkajs internals, read only here).
const require = createRequire(import.meta.url);
const RequestQueue = require('kafkajs/src/network/requestQueue/index.js') as {
  prototype: { checkPendingRequests(this: unknown, ...args: unknown[]): unknown };
};
let checks = 0;
const check = RequestQueue.prototype.checkPendingRequests;
RequestQueue.prototype.checkPendingRequests = function (this: unknown, ...args: unknown[]) {
  checks++;
  return check.apply(this, args);
};

async function idle(label: string): Promise<void> {
  for (let round = 1; round <= rounds; round++) {
    checks = 0;
    const cpu = process.cpuUsage();
    await sleep(seconds * 1000);
    const used = process.cpuUsage(cpu);
    console.log(
      `${label.padEnd(23)} round ${round}  cpu ${((used.user + used.system) / 1000 / seconds).toFixed(1).padStart(5)} ms/s  queue checks ${String(Math.round(checks / seconds)).padStart(4)}/s`,
    );
  }
}

const broker = await startKafka();
try {
  const kafka = new Kafka({ brokers: broker.brokers, clientId: 'kafka-idle', logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'kafka-idle', numPartitions: 1 }], waitForLeaders: true });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic: 'kafka-idle', messages: [{ value: 'x' }] });
  await idle('kafkajs as published');
  // Creating a client installs the replacement (once per process); the connection above keeps going.
  createKafkaClient({ brokers: broker.brokers, clientId: 'kafka-idle-fixed', logger: silentLogger() });
  await idle('after createKafkaClient');
  await producer.disconnect();
} finally {
  await broker.stop();
}
