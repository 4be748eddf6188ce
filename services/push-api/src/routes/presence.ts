import { RegistryIncompleteError } from '@pushline/registry';
import type { ApiContext } from '../context.ts';
import { ProblemError, registryRestoringProblem } from '../problem.ts';
import type { RouteTable } from '../routing.ts';

export function registerPresenceRoutes(table: RouteTable, ctx: ApiContext): void {
  const { schemas } = ctx;
  table.add(
    {
      method: 'get',
      path: '/v1/devices/:deviceId/presence',
      operationId: 'devicePresence',
      summary: 'Is a device connected, where, and since when',
      description:
        'Reads the device registry (not a cache). An unknown or offline device is `online: false` with 200. While the registry is being restored after Redis lost it, a device not found is a 503 with Retry-After: it may be connected.',
      tag: 'presence',
      scope: 'presence',
      params: schemas.DeviceParams,
      body: undefined,
      responses: { 200: { description: 'The device’s presence.', schema: schemas.PresenceResult } },
      problems: ['service-unavailable'],
    },
    async ({ params }) => {
      const record = await registryCall(ctx, async () => {
        const readAt = ctx.completeness?.now() ?? 0;
        const found = await ctx.registry.lookup(params.deviceId);
        if (!found) await ctx.completeness?.confirm(readAt);
        return found;
      });
      return {
        status: 200,
        body: record
          ? {
              deviceId: params.deviceId,
              online: true,
              userId: record.userId,
              serverId: record.serverId,
              connectedAt: record.connectedAt,
              lastSeen: record.lastSeen,
            }
          : { deviceId: params.deviceId, online: false },
      };
    },
  );

  table.add(
    {
      method: 'get',
      path: '/v1/users/:userId/devices',
      operationId: 'userDevices',
      summary: 'Which of a user’s devices are connected',
      tag: 'presence',
      scope: 'presence',
      params: schemas.UserParams,
      body: undefined,
      responses: { 200: { description: 'The user’s connected devices.', schema: schemas.UserDevicesResult } },
      problems: ['service-unavailable'],
    },
    async ({ params }) => {
      const devices = await registryCall(ctx, async () => {
        const readAt = ctx.completeness?.now() ?? 0;
        const found = await ctx.registry.userDevices(params.userId);
        // A device missing from the list would read as offline: the list must be whole.
        await ctx.completeness?.confirm(readAt);
        return found;
      });
      return {
        status: 200,
        body: {
          userId: params.userId,
          devices: devices.map((d) => ({
            deviceId: d.deviceId,
            serverId: d.serverId,
            connectedAt: d.connectedAt,
            lastSeen: d.lastSeen,
          })),
        },
      };
    },
  );
}

async function registryCall<T>(ctx: ApiContext, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof RegistryIncompleteError) {
      ctx.logger.warn({ err }, 'presence waits for the registry to be restored');
      throw registryRestoringProblem(err);
    }
    ctx.logger.error({ err }, 'device registry lookup failed');
    throw new ProblemError('service-unavailable', 'The device registry is unreachable; retry later.', {
      retryAfterSeconds: 1,
      cause: err,
    });
  }
}
