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
 * Bytes the broker has not read yet (it is stopped) on each connection process `pid` holds to it,
 * by the process's port: what the process sent on it since the stop, as the kernel's receive
 * queue on the broker's side.
 */
function unreadByBrokerFrom(pid: number, brokerPort: number): Map<number, number> {
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
  return new Map(
    sockets
      .filter((s) => s.localPort === brokerPort && clientPorts.has(s.remotePort))
      .map((s) => [s.remotePort, s.unread]),
  );
}

/** The most any one connection gained since `before`. */
function largestGain(now: Map<number, number>, before: Map<number, number>): number {
  return Math.max(0, ...[...now].map(([port, unread]) => unread - (before.get(port) ?? 0)));
}

/**
 * Ids at their longest (128 characters), so the produce of the held request's event, which
 * carries them four times over (record key, request id, target, device), is 858 bytes: more than
 * a fetch of a topic's three partitions (about 200), a heartbeat or a metadata request, which the
 * processor's consumers may send to the stopped broker at the same moment on connections of
 * their own. With short ids and the bytes of all connections summed, such requests could pass
 * for the produce, and the processor was killed before it had sent it.
 */
const DEVICE = `dev-${'d'.repeat(124)}`;
const HELD = `held-${'h'.repeat(123)}`;
const PRODUCE_BYTES = 800;

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
    let unreadAtStop = new Map<number, number>();
    let pid = 0;
    const device = await w.connectDevice(server, DEVICE, 'user-1', undefined, {
      onMessage: (msg, ack) => {
        if (msg.id === HELD) {
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
    await w.publish([w.request('warm', { type: 'device', id: DEVICE })]);
    await w.events.waitFor((evs) => evs.some((e) => e.requestId === 'warm' && e.terminal), 'the first event');
    await w.publish([w.request(HELD, { type: 'device', id: DEVICE })]);

    // The outcome is recorded in Redis before it is produced; then the produce goes out, and
    // waits in the stopped broker's receive queue.
    const outcomeKey = `${w.keyPrefix}outcome:{~kafka/${HELD}}`;
    await waitUntil(async () => brokerStopped && (await w.redis.exists(outcomeKey)) === 1, {
      what: 'the delivered request’s outcome to be recorded',
      timeoutMs: 20_000,
    }).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${outputOf(first)}`);
    });
    await waitUntil(() => largestGain(unreadByBrokerFrom(pid, brokerPort), unreadAtStop) >= PRODUCE_BYTES, {
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
    const claimKey = `${w.keyPrefix}req:{~kafka/${HELD}}`;
    await waitUntil(async () => (await w.redis.get(claimKey)) === 'done', {
      what: 'the replacement to finish the request',
      timeoutMs: 40_000,
    }).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${outputOf(second)}`);
    });
    assert.equal(await w.redis.exists(outcomeKey), 0, 'the recorded outcome is cleared with the done mark');

    // A later request of the same device shares the partition: once its event is read, every
    // event of `held` is too.
    await w.publish([w.request('after', { type: 'device', id: DEVICE })]);
    await within(
      w.events.waitFor((evs) => evs.some((e) => e.requestId === 'after' && e.terminal), 'the later event'),
      30_000,
      'the later request’s event',
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${outputOf(second)}`);
    });

    const held = w.events.terminal(HELD);
    assert.equal(held.length, 1, `exactly one terminal event: ${JSON.stringify(held)}`);
    assert.equal(held[0]?.outcome, 'delivered');
    assert.deepEqual(device.ids(), ['warm', HELD, 'after'], 'the device got each message once');
    // The broker appended what the dead processor had sent: the replacement found it there.
    assert.match(
      outputOf(second),
      /"found":1,"missing":0,.*"checked which recorded outcomes a dead holder published"/,
      `the first processor:\n${outputOf(first)}\nthe replacement:\n${outputOf(second)}`,
    );
  });
});
