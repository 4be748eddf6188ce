import type { ScrapeTarget } from '@pushline/config';
import type { DeviceRegistry, ServerLoad } from '@pushline/registry';
import { parsePrometheusText, type Logger } from '@pushline/telemetry';
import { identityRows, stageRows, type IdentityRow, type Scrape, type StageRow } from './stages.ts';

export interface ServerView extends ServerLoad {
  /** `ready`, `draining`, or `down` (its /readyz did not answer 200), from the console's own probe. */
  readonly health: 'ready' | 'draining' | 'down';
  /** How old the load report is. */
  readonly reportAgeMs: number;
}

export interface ScrapeStatus {
  readonly name: string;
  readonly url: string;
  readonly ok: boolean;
  readonly error?: string;
}

export interface Overview {
  readonly at: number;
  readonly servers: readonly ServerView[];
  readonly devicesOnline: number;
  readonly stages: readonly StageRow[];
  readonly identities: readonly IdentityRow[];
  readonly scrapes: readonly ScrapeStatus[];
}

export interface OverviewOptions {
  readonly registry: DeviceRegistry;
  /** Besides the connection servers, which are found through their load reports. */
  readonly scrapeTargets: readonly ScrapeTarget[];
  /** An overview younger than this is served again rather than rebuilt. */
  readonly refreshMs: number;
  readonly logger: Logger;
  /** Bound on each probe and scrape. Default 2000 ms. */
  readonly probeTimeoutMs?: number;
}

/**
 * Builds the live overview on demand, at most once per refresh interval however many operators
 * watch, so an idle console costs the platform nothing. Rates come from the previous build.
 */
export class OverviewCollector {
  readonly #options: OverviewOptions;
  #latest: Overview | undefined;
  #previousScrapes: Scrape[] | undefined;
  #building: Promise<Overview> | undefined;

  constructor(options: OverviewOptions) {
    this.#options = options;
  }

  get(): Promise<Overview> {
    if (this.#latest && Date.now() - this.#latest.at < this.#options.refreshMs)
      return Promise.resolve(this.#latest);
    this.#building ??= this.#build().finally(() => (this.#building = undefined));
    return this.#building;
  }

  /** The device URLs of the live connection servers (for the demo page). */
  async deviceUrls(): Promise<string[]> {
    const servers = await this.#options.registry.liveServers();
    return servers.filter((s) => !s.draining).map((s) => s.deviceUrl);
  }

  async #build(): Promise<Overview> {
    const at = Date.now();
    const loads = await this.#options.registry.liveServers();
    loads.sort((a, b) => a.serverId.localeCompare(b.serverId));
    const targets: ScrapeTarget[] = [
      ...loads.map((l) => ({ name: l.serverId, url: l.serverUrl })),
      ...this.#options.scrapeTargets,
    ];
    const [health, scraped] = await Promise.all([
      Promise.all(loads.map((l) => this.#probe(l.serverUrl))),
      Promise.all(targets.map((t) => this.#scrape(t, at))),
    ]);
    const scrapes = scraped.flatMap((s) => (s.scrape ? [s.scrape] : []));
    const previous = this.#previousScrapes;
    this.#previousScrapes = scrapes;
    const overview: Overview = {
      at,
      servers: loads.map((l, i) => ({
        ...l,
        health: health[i] ?? 'down',
        reportAgeMs: Math.max(0, at - l.at),
      })),
      devicesOnline: loads.reduce((sum, l) => sum + l.connections, 0),
      stages: stageRows(scrapes, previous && sameTargets(previous, scrapes) ? previous : undefined),
      identities: identityRows(scrapes),
      scrapes: scraped.map((s) => s.status),
    };
    this.#latest = overview;
    return overview;
  }

  async #probe(url: string): Promise<ServerView['health']> {
    try {
      const res = await fetch(`${url}/readyz`, {
        signal: AbortSignal.timeout(this.#options.probeTimeoutMs ?? 2_000),
      });
      if (res.ok) return 'ready';
      const body = (await res.json().catch(() => ({}))) as { detail?: { draining?: unknown } };
      return body.detail?.draining === true ? 'draining' : 'down';
    } catch {
      return 'down';
    }
  }

  async #scrape(target: ScrapeTarget, at: number): Promise<{ status: ScrapeStatus; scrape?: Scrape }> {
    try {
      const res = await fetch(`${target.url}/metrics`, {
        signal: AbortSignal.timeout(this.#options.probeTimeoutMs ?? 2_000),
      });
      if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
      const families = parsePrometheusText(await res.text());
      const service = families.flatMap((f) => f.samples).find((s) => s.labels['service'])?.labels['service'];
      return { status: { ...target, ok: true }, scrape: { name: target.name, service, families, at } };
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      this.#options.logger.debug({ target: target.name, err }, 'scrape failed');
      return { status: { ...target, ok: false, error } };
    }
  }
}

/** Rates only compare like with like: a target that appeared or vanished would fake a jump. */
function sameTargets(a: readonly Scrape[], b: readonly Scrape[]): boolean {
  return a.length === b.length && a.every((s, i) => s.name === b[i]?.name);
}
