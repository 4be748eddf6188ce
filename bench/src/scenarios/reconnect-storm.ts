import { row } from '../report/model.ts';
import { round } from '../stats.ts';
import type { ConnectionServerProcess } from '../targets/pushline.ts';
import { countRegistered, pollUntil, requirePushline, withFleet } from './common.ts';
import { ScenarioSkipped, type Scenario, type ScenarioContext, type ScenarioOutput } from './types.ts';

/** Scenario 6: kill -9 the server holding N devices; they reconnect to the other one. */
export const reconnectStorm: Scenario = {
  id: 6,
  name: 'reconnect-storm',
  title: 'Reconnect storm after kill -9 of a connection server',
  timeoutMs: (o) => 180_000 + o.stormDevices * 20,
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const pushline = requirePushline(ctx);
    const [victim, survivor] = pushline.servers as [ConnectionServerProcess?, ConnectionServerProcess?];
    if (!victim || !survivor) throw new ScenarioSkipped('needs two connection servers');
    const n = ctx.options.stormDevices;
    const deadlineMs = ctx.options.smoke ? 20_000 : 60_000;
    const reconnectDelayMs = 1000;
    return withFleet(ctx, 'storm', n, async (fleet, ids) => {
      // Every device starts on the victim; after a drop each one tries the next URL (the survivor).
      const connect = await fleet.connect({
        urls: [victim.deviceUrl, survivor.deviceUrl],
        pin: 0,
        reconnectDelayMs,
      });
      const before = await pollUntil(
        () => countRegistered(pushline, ids, victim.serverId),
        (c) => c >= connect.connected,
        30_000,
        200,
      );
      ctx.log(
        `storm: ${connect.connected}/${n} connected, ${before.value} registered on ${victim.serverId}; kill -9`,
      );
      const killedAt = performance.now();
      await victim.process.kill();
      const sockets = pollUntil(
        () => fleet.stats(),
        (s) => s.connected >= connect.connected,
        deadlineMs,
        100,
      );
      const registered = await pollUntil(
        () => countRegistered(pushline, ids, survivor.serverId),
        (c) => c >= connect.connected,
        deadlineMs,
        100,
      );
      const reconnected = await sockets;
      const elapsed = (r: { reached: boolean; atMs: number }) => (r.reached ? round(r.atMs / 1000, 2) : null);
      const stats = reconnected.value;
      const result = {
        devices: n,
        connectedBefore: connect.connected,
        registeredBefore: before.value,
        socketsReconnectedS: elapsed(reconnected),
        reRegisteredS: elapsed(registered),
        reRegistered: registered.value,
        lost: connect.connected - registered.value,
        reconnects: stats.reconnects,
        reconnectErrors: stats.reconnectErrors,
        reconnectErrorKinds: stats.reconnectErrorKinds,
        deadlineS: deadlineMs / 1000,
        sinceKillS: round((performance.now() - killedAt) / 1000, 2),
      };
      ctx.log(`storm: ${JSON.stringify(result)}`);
      return {
        rows: [
          row(
            'storm.devices',
            'devices on the killed server',
            'devices',
            { pushline: connect.connected },
            'higher',
          ),
          row(
            'storm.sockets_s',
            'kill → every socket reconnected',
            's',
            { pushline: result.socketsReconnectedS },
            'lower',
          ),
          row(
            'storm.registered_s',
            'kill → every device registered on the survivor',
            's',
            { pushline: result.reRegisteredS },
            'lower',
          ),
          row(
            'storm.lost',
            `not re-registered within ${deadlineMs / 1000} s`,
            'devices',
            { pushline: result.lost },
            'lower',
          ),
          row(
            'storm.reconnect_errors',
            'failed reconnect attempts (retried)',
            'attempts',
            { pushline: stats.reconnectErrors },
            'lower',
          ),
        ],
        charts: [],
        notes: [
          `Devices reconnect after ${reconnectDelayMs / 2}–${(reconnectDelayMs * 3) / 2} ms (socket.io-client's default first delay), to the other server, with backoff on failure.`,
          'Registered = the registry maps the device to the survivor (lookupMany over all ids every 100 ms).',
        ],
        details: result,
      };
    });
  },
};
