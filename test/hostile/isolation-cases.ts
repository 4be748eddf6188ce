import { randomBytes } from 'node:crypto';
import type { TopicNames } from '@pushline/config';
import { waitUntil } from '@pushline/testkit';
import type { ChildApiKeys } from '../support/child-platform.ts';
import { signToken } from './device-cases.ts';
import { brief, hang, OK, wrong, type HostileCase, type Verdict } from './harness.ts';
import { LiveDevice } from './live-device.ts';
import { rawHttp } from './raw-http.ts';
import { RawSocket } from './raw-socket.ts';
import { testKafkaClient } from '@pushline/testkit';

/**
 * Ids chosen by one party must not suppress another party's messages: a device's d2d id against
 * a backend's push id (issue item 4), one API key's request id against another key's (item 3).
 */

export interface IsolationContext {
  readonly apiUrl: string;
  readonly deviceUrl: string;
  readonly keys: ChildApiKeys;
  readonly jwtSecret: string;
  readonly topics: TopicNames;
  readonly deadlineMs: number;
}

const fresh = (label: string) => `hx-${label}-${randomBytes(4).toString('hex')}`;

/** POST/GET on the API with a key; the parsed JSON answer. */
export async function callApi(
  apiUrl: string,
  key: string,
  method: string,
  path: string,
  body: unknown,
  deadlineMs: number,
): Promise<{ status: number; body: unknown } | undefined> {
  const result = await rawHttp(apiUrl, {
    method,
    path,
    headers: [
      ['authorization', `Bearer ${key}`],
      ['content-type', 'application/json'],
    ],
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    deadlineMs,
  });
  if (result.kind !== 'response') return undefined;
  const text = result.response.body.toString('utf8');
  return { status: result.response.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}

/** Waits until the registry (through the presence API) shows the device online. */
export async function awaitOnline(
  apiUrl: string,
  key: string,
  deviceId: string,
  timeoutMs: number,
): Promise<void> {
  await waitUntil(
    async () => {
      const answer = await callApi(apiUrl, key, 'GET', `/v1/devices/${deviceId}/presence`, undefined, 2_000);
      return (answer?.body as { online?: unknown } | undefined)?.online === true;
    },
    { timeoutMs, what: `${deviceId} online` },
  );
}

export function isolationCases(ctx: IsolationContext): HostileCase[] {
  const { deadlineMs } = ctx;
  const d2dThenBackend: HostileCase = {
    family: 'isolation',
    name: 'a sibling device sends d2d id X first; a backend push with id X must still be sent',
    item: 4,
    run: async (): Promise<Verdict> => {
      const userId = fresh('u');
      const target = await LiveDevice.connect(ctx.deviceUrl, {
        id: fresh('target'),
        userId,
        jwtSecret: ctx.jwtSecret,
      });
      const sender = await RawSocket.open(ctx.deviceUrl, { deadlineMs });
      try {
        if (!(sender instanceof RawSocket)) return hang(`sibling could not open: ${sender.failed}`);
        const token = signToken(
          { alg: 'HS256' },
          { sub: fresh('sibling'), uid: userId, exp: Math.floor(Date.now() / 1000) + 600 },
          ctx.jwtSecret,
        );
        if (!(await sender.connect(JSON.stringify({ token }), deadlineMs))?.ok)
          return hang('sibling not accepted');
        await awaitOnline(ctx.apiUrl, ctx.keys.admin, target.id, deadlineMs);
        const id = fresh('shared-id');
        const ack = await sender.request(
          JSON.stringify(['send', { to: target.id, id, payload: { from: 'sibling' }, timeoutMs: 3000 }]),
          1,
          deadlineMs,
        );
        if ((ack as { outcome?: unknown } | undefined)?.outcome !== 'delivered')
          return wrong(`the d2d send itself was not delivered: ${brief(ack)}`);
        const pushed = await callApi(
          ctx.apiUrl,
          ctx.keys.admin,
          'POST',
          `/v1/devices/${target.id}/messages`,
          { id, payload: { from: 'backend' }, timeoutMs: 3000 },
          deadlineMs,
        );
        if (!pushed) return hang('the backend push got no answer');
        const fromBackend = target.messages.filter((m) => m.id === id && m.from === undefined);
        if (fromBackend.length === 0)
          return wrong(`the backend push was not sent (answer ${pushed.status} ${brief(pushed.body, 120)})`);
        return OK;
      } finally {
        if (sender instanceof RawSocket) sender.close();
        target.close();
      }
    },
  };

  const requestIdAcrossKeys: HostileCase = {
    family: 'isolation',
    name: "one key publishes request id Y first; another key's request Y must still be delivered",
    item: 3,
    run: async (): Promise<Verdict> => {
      const victim = await LiveDevice.connect(ctx.deviceUrl, {
        id: fresh('victim'),
        userId: fresh('u'),
        jwtSecret: ctx.jwtSecret,
      });
      const id = fresh('req');
      const seen = new Set<string>();
      const events = testKafkaClient(fresh('events')).consumer({
        groupId: fresh('hostile-events'),
        topics: [ctx.topics.deliveryEvents],
        fromBeginning: true,
        handleBatch: async (batch) => {
          for (const r of batch.records) {
            const requestId = (JSON.parse(r.value?.toString('utf8') ?? '{}') as { requestId?: unknown })
              .requestId;
            if (typeof requestId === 'string') seen.add(requestId);
          }
        },
      });
      try {
        await Promise.all([events.start(), awaitOnline(ctx.apiUrl, ctx.keys.admin, victim.id, deadlineMs)]);
        const first = await callApi(
          ctx.apiUrl,
          ctx.keys.publish,
          'POST',
          '/v1/publish',
          { id, target: { type: 'device', id: fresh('elsewhere') }, payload: { by: 'other key' } },
          deadlineMs,
        );
        if (first?.status !== 202) return wrong(`the first publish answered ${first?.status}`);
        // The first request is done (its outcome recorded) before the second is published.
        await waitUntil(() => seen.has(id), { timeoutMs: 3 * deadlineMs, what: `outcome of ${id}` });
        const second = await callApi(
          ctx.apiUrl,
          ctx.keys.admin,
          'POST',
          '/v1/publish',
          { id, target: { type: 'device', id: victim.id }, payload: { by: 'admin key' } },
          deadlineMs,
        );
        if (second?.status !== 202) return wrong(`the second publish answered ${second?.status}`);
        const got = await victim.waitFor(id, 3 * deadlineMs);
        return got ? OK : wrong("the second key's accepted request (202) was never delivered");
      } finally {
        victim.close();
        await events.close();
      }
    },
  };
  return [d2dThenBackend, requestIdAcrossKeys];
}
