import type { ChaosFleet } from './devices.ts';
import type { Observer } from './observer.ts';
import type { ChaosPlatform } from './platform.ts';

export interface ProbeContext {
  readonly platform: ChaosPlatform;
  readonly fleet: ChaosFleet;
  readonly observer: Observer;
  /** Devices the async canary goes to (besides one per server). */
  readonly canaries: readonly string[];
}

let probeSeq = 0;

const apiHeaders = (platform: ChaosPlatform) => ({
  authorization: `Bearer ${platform.apiKey}`,
  'content-type': 'application/json',
});

/**
 * One health probe of the whole platform, as a customer would judge it. Healthy means: every
 * service not held down answers /readyz 200; every device is connected and the registry maps it
 * to the server it is connected to (presence is right); a direct push to a device on each server
 * is delivered; an async publish to each canary device is delivered (its `delivered` event is on
 * the delivery-events topic). Resolves with the problems found; none means healthy.
 */
export async function probePlatform(ctx: ProbeContext, timeoutMs = 5000): Promise<string[]> {
  const { platform, fleet, observer } = ctx;
  const problems: string[] = [];
  const run = `probe-${platform.run}-${probeSeq++}`;

  await Promise.all(
    platform.services().map(async (s) => {
      if (s.heldDown) return;
      if (!s.isRunning()) {
        problems.push(`${s.name} is not running`);
        return;
      }
      try {
        const res = await fetch(`${s.opsUrl}/readyz`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        if (!res.ok) problems.push(`${s.name} /readyz ${res.status}`);
      } catch (err) {
        problems.push(`${s.name} /readyz: ${err instanceof Error ? err.message : String(err)}`);
      }
    }),
  );

  const disconnected = fleet.devices.filter((d) => !d.connected);
  if (disconnected.length > 0) {
    problems.push(
      `${disconnected.length} devices not connected (${disconnected
        .slice(0, 3)
        .map((d) => d.describe())
        .join(' | ')})`,
    );
  }
  try {
    const records = await platform.registry.lookupMany(fleet.devices.map((d) => d.id));
    let wrong = 0;
    records.forEach((r, i) => {
      const d = fleet.devices[i];
      if (d?.connected && r?.serverId !== d.serverId) wrong++;
    });
    if (wrong > 0) problems.push(`presence wrong for ${wrong} connected devices`);
  } catch (err) {
    problems.push(`registry: ${err instanceof Error ? err.message : String(err)}`);
  }

  // Direct: one connected device per server.
  const perServer = new Map<string, string>();
  for (const d of fleet.devices)
    if (d.serverId && !perServer.has(d.serverId)) perServer.set(d.serverId, d.id);
  await Promise.all(
    [...perServer.values()].map(async (deviceId, i) => {
      try {
        const res = await fetch(`${platform.apiUrl}/v1/devices/${deviceId}/messages`, {
          method: 'POST',
          headers: apiHeaders(platform),
          body: JSON.stringify({ id: `${run}-direct-${i}`, payload: { probe: true }, timeoutMs: 2000 }),
          signal: AbortSignal.timeout(timeoutMs),
        });
        const text = await res.text();
        if (res.status !== 200)
          problems.push(`direct push to ${deviceId}: ${res.status} ${text.slice(0, 120)}`);
      } catch (err) {
        problems.push(`direct push to ${deviceId}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }),
  );

  // Async: canaries plus the same per-server devices, one publish.
  const targets = [...new Set([...ctx.canaries, ...perServer.values()])];
  const ids = targets.map((_, i) => `${run}-async-${i}`);
  try {
    const res = await fetch(`${platform.apiUrl}/v1/publish`, {
      method: 'POST',
      headers: apiHeaders(platform),
      body: JSON.stringify({
        messages: targets.map((deviceId, i) => ({
          id: ids[i],
          target: { type: 'device', id: deviceId },
          payload: { probe: true },
        })),
      }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    if (res.status !== 202) {
      problems.push(`publish: ${res.status} ${text.slice(0, 120)}`);
    } else {
      const delivered = (id: string) =>
        observer.events(id).some((e) => e.event.terminal && e.event.outcome === 'delivered');
      const ok = await observer.until(() => ids.every(delivered), timeoutMs);
      if (!ok) {
        const missing = ids.filter((id) => !delivered(id)).length;
        problems.push(`async: ${missing}/${ids.length} canaries not delivered within ${timeoutMs} ms`);
      }
    }
  } catch (err) {
    problems.push(`publish: ${err instanceof Error ? err.message : String(err)}`);
  }
  return problems;
}
