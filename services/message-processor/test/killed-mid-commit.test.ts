import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { startKafka, type KafkaInstance } from '@pushline/devstack';
import { waitUntil, within } from '@pushline/testkit';
import { World, outputOf } from './harness.ts';

/**
 * A processor killed with -9 while the events of a request it delivered are on their way to
 * Kafka: the broker (one of this file's own, not the run's shared one) is stopped with SIGSTOP
 * when the device gets the message, so the produce that follows the ack hangs in the broker's
 * socket buffer. The processor is killed, the broker continued, and the broker then appends the
 * events the dead processor sent. The replacement must not write a second terminal event.
 */
interface TcpSocket {
  readonly localPort: number;
  readonly remotePort: number;
  /** Bytes received and not read by the socket's owner yet. */
  readonly unread: number;
  readonly inode: string;
}

/** Every TCP socket of the machine, from /proc (IPv4 and IPv6: the JVM listens on both). */
function tcpSockets(): TcpSocket[] {
  const sockets: TcpSocket[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      const [local, remote, queues, inode] = [cols[1], cols[2], cols[4], cols[9]];
      if (!local || !remote || !queues || !inode) continue;
      sockets.push({
        localPort: parseInt(local.slice(local.lastIndexOf(':') + 1), 16),
        remotePort: parseInt(remote.slice(remote.lastIndexOf(':') + 1), 16),
        unread: parseInt(queues.slice(queues.indexOf(':') + 1), 16),
        inode,
      });
    }
  }
  return sockets;
}

/**
 * Bytes the broker has not read yet (it is stopped) on the connections process `pid` holds to it:
 * what the process has sent since the stop, as the kernel's receive queues on the broker's side.
 */
function unreadByBrokerFrom(pid: number, brokerPort: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (target.startsWith('socket:[')) inodes.add(target.slice(8, -1));
    } catch {
      // closed meanwhile
    }
  }
  const sockets = tcpSockets();
  const clientPorts = new Set(
    sockets.filter((s) => inodes.has(s.inode) && s.remotePort === brokerPort).map((s) => s.localPort),
  );
  return sockets
    .filter((s) => s.localPort === brokerPort && clientPorts.has(s.remotePort))
    .reduce((sum, s) => sum + s.unread, 0);
}

/** A produce of one event (its JSON alone is about 300 bytes) is more than any heartbeat or fetch. */
const PRODUCE_BYTES = 400;

describe('a processor killed while it writes a request’s events', () => {
  let kafka: KafkaInstance;
  let world: World | undefined;
  let brokerStopped = false;

  before(async () => {
    kafka = await startKafka();
  });
  after(async () => {
    if (brokerStopped) process.kill(kafka.pid, 'SIGCONT');
    await world?.close();
    await kafka.stop();
  });

  it('the replacement publishes only what the log lacks, and delivers nothing again: one terminal event', async () => {
    const w = (world = new World({ kafkaBrokers: kafka.brokers }));
    await w.start();
    const server = await w.startConnectionServer('a');
    const brokerPort = Number(kafka.brokers[0]?.split(':')[1]);
    let unreadAtStop = 0;
    let pid = 0;
    const device = await w.connectDevice(server, 'dev', 'user-1', undefined, {
      onMessage: (msg, ack) => {
        if (msg.id === 'held') {
          // The produce of the outcome comes right after the ack: it finds the broker stopped.
          process.kill(kafka.pid, 'SIGSTOP');
          brokerStopped = true;
          unreadAtStop = unreadByBrokerFrom(pid, brokerPort);
        }
        ack();
      },
    });
    const first = w.spawnProcessor({ PUSHLINE_LOG_LEVEL: 'info' });
    pid = first.pid ?? 0;
    await waitUntil(() => outputOf(first).includes('message processor started'), {
      what: 'the first processor to start',
      timeoutMs: 30_000,
    });
    // A first request makes the processor's producer learn where delivery-events lives, so the
    // next produce goes straight out (a metadata request would wait in the broker instead).
    await w.publish([w.request('warm', { type: 'device', id: 'dev' })]);
    await w.events.waitFor((evs) => evs.some((e) => e.requestId === 'warm' && e.terminal), 'the first event');
    await w.publish([w.request('held', { type: 'device', id: 'dev' })]);

    // The outcome is recorded in Redis before it is produced; then the produce goes out, and
    // waits in the stopped broker's receive queue.
    const outcomeKey = `${w.keyPrefix}outcome:{~kafka/held}`;
    await waitUntil(async () => brokerStopped && (await w.redis.exists(outcomeKey)) === 1, {
      what: 'the delivered request’s outcome to be recorded',
      timeoutMs: 20_000,
    }).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${outputOf(first)}`);
    });
    await waitUntil(() => unreadByBrokerFrom(pid, brokerPort) - unreadAtStop >= PRODUCE_BYTES, {
      what: 'the produce of the outcome to reach the stopped broker',
      timeoutMs: 10_000,
    });
    first.kill('SIGKILL');
    await once(first, 'exit');
    process.kill(kafka.pid, 'SIGCONT');
    brokerStopped = false;

    const second = w.spawnProcessor({ PUSHLINE_LOG_LEVEL: 'info' });
    // The replacement takes the request over once the dead processor's claim expires, finds its
    // recorded outcome, and marks the request done.
    const claimKey = `${w.keyPrefix}req:{~kafka/held}`;
    await waitUntil(async () => (await w.redis.get(claimKey)) === 'done', {
      what: 'the replacement to finish the request',
      timeoutMs: 40_000,
    }).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${outputOf(second)}`);
    });
    assert.equal(await w.redis.exists(outcomeKey), 0, 'the recorded outcome is cleared with the done mark');

    // A later request of the same device shares the partition: once its event is read, every
    // event of `held` is too.
    await w.publish([w.request('after', { type: 'device', id: 'dev' })]);
    await within(
      w.events.waitFor((evs) => evs.some((e) => e.requestId === 'after' && e.terminal), 'the later event'),
      30_000,
      'the later request’s event',
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${outputOf(second)}`);
    });

    const held = w.events.terminal('held');
    assert.equal(held.length, 1, `exactly one terminal event: ${JSON.stringify(held)}`);
    assert.equal(held[0]?.outcome, 'delivered');
    assert.deepEqual(device.ids(), ['warm', 'held', 'after'], 'the device got each message once');
    // The broker appended what the dead processor had sent: the replacement found it there.
    assert.match(
      outputOf(second),
      /"found":1,"missing":0,.*"checked which recorded outcomes a dead holder published"/,
      `the first processor:\n${outputOf(first)}\nthe replacement:\n${outputOf(second)}`,
    );
  });
});
