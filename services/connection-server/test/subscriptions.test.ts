import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import { ChannelDeliveryTransport } from '@pushline/delivery';
import { DeviceMessage, SubscribeAck } from '@pushline/protocol';
import { isCluster } from '@pushline/registry';
import { silentLogger } from '@pushline/telemetry';
import { testRedis, watchRedisCommands } from '@pushline/testkit';
import { defaultTopicAuthorizer } from '@pushline/connection-server';
import { createWorld, metricValue, type ClientSocket, type TestWorld } from './helpers.ts';

type Ack = (answer: unknown) => void;

function request(socket: ClientSocket, event: string, body: unknown): Promise<unknown> {
  return socket.timeout(5_000).emitWithAck(event, body);
}

function collect(socket: ClientSocket, answer: unknown = { ok: true }): DeviceMessage[] {
  const seen: DeviceMessage[] = [];
  socket.on('message', (msg: unknown, ack: Ack) => {
    seen.push(DeviceMessage.parse(msg));
    ack(answer);
  });
  return seen;
}

describe('topic subscriptions', () => {
  let world: TestWorld;
  beforeEach(async () => {
    world = await createWorld('subs');
  });
  afterEach(async () => {
    await world.close();
  });

  it('authorizes topics from the token claims', () => {
    const claims = { sub: 'd', uid: 'u1', exp: 0, topics: ['news', 'scores.*'] };
    assert.equal(defaultTopicAuthorizer(claims, 'news'), true);
    assert.equal(defaultTopicAuthorizer(claims, 'newsletter'), false);
    assert.equal(defaultTopicAuthorizer(claims, 'scores.live'), true);
    assert.equal(defaultTopicAuthorizer(claims, 'user:u1'), true);
    // Exact only: `user:u1.inbox` is the own topic of user `u1.inbox` (ids may hold dots).
    assert.equal(defaultTopicAuthorizer(claims, 'user:u1.inbox'), false);
    assert.equal(defaultTopicAuthorizer(claims, 'user:u10'), false);
    assert.equal(defaultTopicAuthorizer(claims, 'user:u2'), false);
    assert.equal(defaultTopicAuthorizer({ sub: 'd', uid: 'u1', exp: 0 }, 'news'), false);
  });

  it('subscribes, refuses forbidden and invalid topics, limits the count, and unsubscribes', async () => {
    const { server, metrics } = await world.startServer({ env: { PUSHLINE_MAX_TOPICS_PER_DEVICE: '2' } });
    const device = await world.connect(
      server.deviceUrl,
      await world.token({ sub: 'dev-1', uid: 'u1', topics: ['news', 'scores.*'] }),
    );
    const ack = async (event: string, body: unknown) =>
      SubscribeAck.parse(await request(device, event, body));

    assert.deepEqual(await ack('subscribe', { topic: 'news' }), { ok: true, topic: 'news' });
    assert.deepEqual(await ack('subscribe', { topic: 'news' }), { ok: true, topic: 'news' });
    const forbidden = await ack('subscribe', { topic: 'secret' });
    assert.equal(forbidden.ok, false);
    assert.equal(!forbidden.ok && forbidden.error.code, 'forbidden');
    const invalid = await ack('subscribe', { topic: 'has space' });
    assert.equal(!invalid.ok && invalid.error.code, 'invalid_request');
    assert.deepEqual(await ack('subscribe', { topic: 'user:u1' }), { ok: true, topic: 'user:u1' });
    const tooMany = await ack('subscribe', { topic: 'scores.live' });
    assert.equal(!tooMany.ok && tooMany.error.code, 'too_many_subscriptions');

    assert.deepEqual(await ack('unsubscribe', { topic: 'news' }), { ok: true, topic: 'news' });
    assert.deepEqual(await ack('unsubscribe', { topic: 'never-subscribed' }), {
      ok: true,
      topic: 'never-subscribed',
    });
    assert.deepEqual(await ack('subscribe', { topic: 'scores.live' }), { ok: true, topic: 'scores.live' });
    assert.equal(
      await metricValue(metrics, 'pushline_subscriptions_total', { op: 'subscribe', result: 'forbidden' }),
      1,
    );

    // Only subscribers get a broadcast; an unsubscribed topic is no longer delivered.
    const seen = collect(device);
    assert.equal(
      (await server.broadcast({ messageId: 'b1', topic: 'news', payload: 1, timeoutMs: 500 })).delivered,
      0,
    );
    const live = await server.broadcast({
      messageId: 'b2',
      topic: 'scores.live',
      payload: 2,
      timeoutMs: 2_000,
    });
    assert.equal(live.delivered, 1);
    assert.deepEqual(
      seen.map((m) => [m.id, m.topic, m.payload]),
      [['b2', 'scores.live', 2]],
    );
  });

  it("refuses another user's private topic when one user id extends the other", async () => {
    const { server } = await world.startServer();
    const alice = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-a', uid: 'alice' }));
    const smith = await world.connect(
      server.deviceUrl,
      await world.token({ sub: 'dev-s', uid: 'alice.smith' }),
    );
    const refused = SubscribeAck.parse(await request(alice, 'subscribe', { topic: 'user:alice.smith' }));
    assert.equal(!refused.ok && refused.error.code, 'forbidden');
    assert.deepEqual(SubscribeAck.parse(await request(smith, 'subscribe', { topic: 'user:alice.smith' })), {
      ok: true,
      topic: 'user:alice.smith',
    });
    const seenByAlice = collect(alice);
    const seenBySmith = collect(smith);
    const result = await server.broadcast({
      messageId: 'private-1',
      topic: 'user:alice.smith',
      payload: { secret: true },
      timeoutMs: 2_000,
    });
    assert.equal(result.delivered, 1);
    assert.deepEqual(
      seenBySmith.map((m) => m.id),
      ['private-1'],
    );
    assert.equal(seenByAlice.length, 0);
  });

  for (const adapter of ['sharded', 'classic'] as const) {
    /** Servers A and B on this adapter, and how to connect a subscriber of `news` to one of them. */
    async function twoServers() {
      const env = { PUSHLINE_SOCKETIO_ADAPTER: adapter };
      const a = await world.startServer({ env: { ...env, PUSHLINE_SERVER_ID: 'srv-a' } });
      const b = await world.startServer({ env: { ...env, PUSHLINE_SERVER_ID: 'srv-b' } });
      const connect = async (on: typeof a, sub: string) =>
        world.connect(on.server.deviceUrl, await world.token({ sub, topics: ['news'] }));
      const subscriber = async (on: typeof a, sub: string) => {
        const device = await connect(on, sub);
        assert.deepEqual(SubscribeAck.parse(await request(device, 'subscribe', { topic: 'news' })), {
          ok: true,
          topic: 'news',
        });
        return device;
      };
      return { a, b, connect, subscriber };
    }

    it(`a broadcast reaches subscribers on every server (${adapter} adapter)`, async () => {
      const { a, b, connect, subscriber } = await twoServers();
      const onA = await subscriber(a, 'dev-a');
      const onB = await subscriber(b, 'dev-b');
      const refusing = await subscriber(b, 'dev-c');
      const bystander = await connect(b, 'dev-d');
      const seenA = collect(onA);
      const seenB = collect(onB);
      collect(refusing, { ok: false, reason: 'muted' });
      const seenBystander = collect(bystander);

      // A broadcast call over the channel to server A: one call reaches both servers.
      const transport = new ChannelDeliveryTransport({
        internalToken: world.internalToken,
        logger: silentLogger(),
      });
      const result = await transport
        .broadcast(a.server.internalUrl, {
          messageId: 'm-1',
          topic: 'news',
          payload: { headline: 'hi' },
          timeoutMs: 3_000,
        })
        .finally(() => transport.close());
      assert.equal(result.delivered, 2);
      assert.deepEqual(
        seenA.map((m) => m.id),
        ['m-1'],
      );
      assert.deepEqual(
        seenB.map((m) => m.id),
        ['m-1'],
      );
      assert.deepEqual(seenB[0]?.payload, { headline: 'hi' });
      assert.equal(seenBystander.length, 0);
    });

    it(`a broadcast to many subscribers on another server sends a few adapter messages, not one per ack (${adapter} adapter)`, async (t) => {
      if (isCluster(world.redis)) {
        t.skip('MONITOR shows one node of a cluster');
        return;
      }
      const { a, b, subscriber } = await twoServers();
      const devices = [await subscriber(a, 'dev-a')];
      for (let i = 0; i < 12; i++) devices.push(await subscriber(b, `dev-b${i}`));
      const seen = devices.map((d) => collect(d));

      const channels = `${world.prefix}:socket.io`;
      const monitored = testRedis() as Redis;
      const watch = await watchRedisCommands(
        monitored,
        channels,
        ([command, channel]) =>
          (command === 'publish' || command === 'spublish') && channel?.startsWith(channels) === true,
      );
      try {
        await watch.take();
        const result = await a.server.broadcast({
          messageId: 'm-many',
          topic: 'news',
          payload: 1,
          timeoutMs: 5_000,
        });
        assert.equal(result.delivered, 13);
        assert.ok(seen.every((s) => s.length === 1 && s[0]?.id === 'm-many'));
        // The request to the other server and its one answer; socket.io's acked broadcast through
        // the adapter sent one message per subscriber's ack on the other server, and more.
        const published = await watch.take();
        assert.equal(published.length, 2, JSON.stringify(published.map(([c, ch]) => [c, ch])));
      } finally {
        watch.close();
        await monitored.quit();
      }
    });

    it(`a broadcast counts the acks that came by its timeout, on this server and the others (${adapter} adapter)`, async () => {
      const { a, b, subscriber } = await twoServers();
      const onA = await subscriber(a, 'dev-a');
      const silentOnA = await subscriber(a, 'dev-a-silent');
      const onB = await subscriber(b, 'dev-b');
      const silentOnB = await subscriber(b, 'dev-b-silent');
      collect(onA);
      collect(onB);
      const heard: string[] = [];
      for (const d of [silentOnA, silentOnB]) d.on('message', (msg: { id: string }) => heard.push(msg.id));

      // Server B answers once its silent subscriber timed out; A waits for that answer.
      const result = await a.server.broadcast({
        messageId: 'm-late',
        topic: 'news',
        payload: 1,
        timeoutMs: 300,
      });
      assert.equal(result.delivered, 2);
      assert.deepEqual(heard.sort(), ['m-late', 'm-late']);
      assert.equal(
        await metricValue(a.metrics, 'pushline_broadcasts_total', { result: 'partial_timeout' }),
        1,
      );
    });

    it(`a server that is counted but never answers: the broadcast ends after its timeout with the others' counts (${adapter} adapter)`, async () => {
      const { a, b, subscriber } = await twoServers();
      const onA = await subscriber(a, 'dev-a');
      const onB = await subscriber(b, 'dev-b');
      collect(onA);
      collect(onB);
      // A third "server" that hung: subscribed to the adapter's channel, so counted, and silent.
      const hung = testRedis() as Redis;
      const channel =
        adapter === 'classic' ? `${world.prefix}:socket.io-request#/#` : `${world.prefix}:socket.io#/#`;
      try {
        if (adapter === 'classic') await hung.subscribe(channel);
        else await hung.ssubscribe(channel);
        const result = await a.server.broadcast({
          messageId: 'm-hung',
          topic: 'news',
          payload: 1,
          timeoutMs: 300,
        });
        assert.equal(result.delivered, 2, 'its own subscriber and the answering server’s');
        assert.equal(
          await metricValue(a.metrics, 'pushline_broadcasts_total', { result: 'partial_timeout' }),
          1,
        );
      } finally {
        hung.disconnect();
      }
    });
  }
});
