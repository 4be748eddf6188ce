import { fmt, h, table, time, type Child } from './dom.ts';

/**
 * The operator console. It holds no secret: signing in sends the admin key once to the console
 * server, which answers with an HttpOnly session cookie; every later call rides on the cookie.
 */

interface ServerView {
  serverId: string;
  deviceUrl: string;
  connections: number;
  pendingHandshakes?: number;
  eventLoopDelayMs: number;
  cpuPercent?: number;
  rssBytes: number;
  draining: boolean;
  health: 'ready' | 'draining' | 'down';
  reportAgeMs: number;
}
interface Overview {
  at: number;
  servers: ServerView[];
  devicesOnline: number;
  stages: { label: string; value: number; ratePerS?: number }[];
  identities: {
    id: string;
    left: { label: string; value: number };
    right: { label: string; value: number };
    holds: boolean;
  }[];
  scrapes: { name: string; url: string; ok: boolean; error?: string }[];
  deliveryEvents: {
    requestId: string;
    deviceId?: string;
    target: { type: string; id: string };
    outcome: string;
    source: string;
    reason?: string;
    latencyMs: number;
    at: number;
    traceparent?: string;
  }[];
  deadLetters: {
    ref: string;
    key: string | null;
    value: string;
    reason: string;
    detail: string;
    source: string;
    at: number;
    replayed?: { at: number; id: string };
  }[];
  jaeger: boolean;
}

const root = document.getElementById('root') as HTMLElement;
const CSRF = { 'x-pushline-console': '1' };
let timer: ReturnType<typeof setTimeout> | undefined;
/** DLQ edits in progress survive the refresh that redraws the table. */
const edits = new Map<string, string>();

async function call(method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`/console/api${path}`, {
    method,
    credentials: 'same-origin',
    headers: { ...CSRF, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

async function problemText(res: Response): Promise<string> {
  const body = (await res.json().catch(() => ({}))) as { detail?: string };
  return body.detail ?? `HTTP ${res.status}`;
}

function showLogin(message = ''): void {
  clearTimeout(timer);
  const error = h('p', { class: 'error', 'data-testid': 'login-error' }, message);
  const key = h('input', {
    type: 'password',
    name: 'key',
    placeholder: 'admin API key',
    autocomplete: 'off',
    'data-testid': 'login-key',
  });
  const form = h(
    'form',
    {
      class: 'login',
      'data-testid': 'login',
      onsubmit: (ev) => {
        ev.preventDefault();
        void (async () => {
          const res = await call('POST', '/session', { key: key.value });
          key.value = '';
          if (res.ok) return void start();
          error.textContent = await problemText(res);
        })();
      },
    },
    h('h1', {}, 'Pushline console'),
    h(
      'p',
      { class: 'dim' },
      'Sign in with an admin API key (PUSHLINE_API_KEYS, scope admin). It is sent once and never stored in the page.',
    ),
    key,
    h('button', { type: 'submit' }, 'Sign in'),
    error,
  );
  root.replaceChildren(form);
}

function start(): void {
  const status = h('span', { class: 'dim', 'data-testid': 'refreshed' }, '');
  const body = h('main', {});
  const tools = toolsPanel();
  root.replaceChildren(
    h(
      'header',
      {},
      h('h1', {}, 'Pushline console'),
      status,
      h('span', { class: 'spacer' }),
      h('a', { href: '/demo', target: '_blank' }, 'demo device'),
      h(
        'button',
        { class: 'secondary', onclick: () => void call('DELETE', '/session').then(() => showLogin()) },
        'Sign out',
      ),
    ),
    body,
  );
  const refresh = async () => {
    const res = await call('GET', '/overview').catch(() => undefined);
    if (res?.status === 401) return showLogin('Session ended; sign in again.');
    if (res?.ok) {
      const overview = (await res.json()) as Overview;
      render(body, overview, tools);
      status.textContent = `live · ${time(overview.at)}`;
    } else {
      status.textContent = 'console unreachable; retrying';
    }
    timer = setTimeout(() => void refresh(), 1000);
  };
  void refresh();
}

function render(body: HTMLElement, o: Overview, tools: HTMLElement): void {
  const focused = document.activeElement;
  const healthClass = { ready: 'ok', draining: 'warn', down: 'bad' } as const;
  const servers = h(
    'section',
    { class: 'wide' },
    h('h2', {}, 'Connection servers'),
    table(
      [
        'server',
        'health',
        'connections',
        'pending handshakes',
        'event-loop p99',
        'CPU',
        'RSS',
        'device URL',
        'report',
      ],
      o.servers.map((s) => [
        h('code', {}, s.serverId),
        h('span', { class: `pill ${healthClass[s.health]}` }, s.health),
        fmt(s.connections),
        s.pendingHandshakes === undefined ? '–' : fmt(s.pendingHandshakes),
        `${fmt(s.eventLoopDelayMs, 1)} ms`,
        s.cpuPercent === undefined ? '–' : `${fmt(s.cpuPercent, 1)} %`,
        `${fmt(s.rssBytes / 2 ** 20, 0)} MiB`,
        h('code', {}, s.deviceUrl),
        `${fmt(s.reportAgeMs / 1000, 1)} s ago`,
      ]),
      'servers',
    ),
  );
  const online = h(
    'section',
    {},
    h('h2', {}, 'Devices online'),
    h('div', { class: 'big', 'data-testid': 'devices-online' }, fmt(o.devicesOnline)),
    h('p', { class: 'dim' }, `across ${o.servers.length} connection server(s)`),
    h('h2', {}, 'Scraped'),
    table(
      ['target', 'metrics'],
      o.scrapes.map((s) => [
        h('code', {}, s.name),
        s.ok ? h('span', { class: 'ok' }, 'ok') : h('span', { class: 'bad' }, s.error ?? 'failed'),
      ]),
      'scrapes',
    ),
  );
  const stages = h(
    'section',
    {},
    h('h2', {}, 'Stage counters'),
    table(
      ['stage', 'total', 'per second'],
      o.stages.map((s) => [
        s.label,
        h('span', {}, fmt(s.value)),
        s.ratePerS === undefined ? '–' : fmt(s.ratePerS, 1),
      ]),
      'stages',
    ),
  );
  const identities = h(
    'section',
    {},
    h('h2', {}, 'Identities (docs/observability.md)'),
    table(
      ['#', 'left', '', 'right', ''],
      o.identities.map((i) => [
        i.id,
        `${i.left.label} = ${fmt(i.left.value)}`,
        i.holds ? '=' : '≠',
        `${i.right.label} = ${fmt(i.right.value)}`,
        i.holds
          ? h('span', { class: 'ok' }, 'holds')
          : h('span', { class: 'warn' }, `off by ${fmt(Math.abs(i.left.value - i.right.value))}`),
      ]),
      'identities',
    ),
  );
  const outcomeClass = (o: string) => (o === 'delivered' ? 'ok' : o === 'stored' ? 'warn' : 'bad');
  const events = h(
    'section',
    { class: 'wide' },
    h('h2', {}, 'Latest delivery events'),
    table(
      ['time', 'request', 'target', 'device', 'outcome', 'source', 'latency', 'reason'],
      o.deliveryEvents
        .slice(0, 25)
        .map((e) => [
          time(e.at),
          h('code', {}, e.requestId),
          `${e.target.type}:${e.target.id}`,
          e.deviceId ?? '–',
          h('span', { class: outcomeClass(e.outcome) }, e.outcome),
          e.source,
          `${fmt(e.latencyMs, 1)} ms`,
          e.reason ?? '',
        ]),
      'delivery-events',
    ),
  );
  const dlq = h(
    'section',
    { class: 'wide' },
    h('h2', {}, `Dead-letter queue (${o.deadLetters.length})`),
    table(
      ['time', 'record', 'reason', 'value (edit, then replay into push-requests)', ''],
      o.deadLetters.slice(0, 20).map((d) => {
        const editor = h('textarea', { rows: '3', 'data-testid': `dlq-value-${d.ref}`, 'data-ref': d.ref });
        editor.value = edits.get(d.ref) ?? d.value;
        editor.addEventListener('input', () => edits.set(d.ref, editor.value));
        const result = h(
          'div',
          { 'data-testid': `dlq-result-${d.ref}` },
          d.replayed ? h('span', { class: 'ok' }, `replayed as ${d.replayed.id}`) : '',
        );
        const replay = h(
          'button',
          {
            'data-testid': `dlq-replay-${d.ref}`,
            onclick: () =>
              void (async () => {
                const res = await call('POST', '/dlq/replay', { ref: d.ref, value: editor.value });
                if (res.ok) {
                  edits.delete(d.ref);
                  const { id } = (await res.json()) as { id: string };
                  result.replaceChildren(h('span', { class: 'ok' }, `replayed as ${id}`));
                } else {
                  result.replaceChildren(h('span', { class: 'bad' }, await problemText(res)));
                }
              })(),
          },
          d.replayed ? 'Replay again' : 'Replay',
        );
        return [
          time(d.at),
          h('code', {}, `${d.ref}`),
          h(
            'div',
            {},
            h('span', { class: 'bad' }, d.reason),
            h('div', { class: 'dim' }, d.detail),
            h('div', { class: 'dim' }, `from ${d.source}`),
          ),
          editor,
          h('div', {}, replay, result),
        ] satisfies Child[];
      }),
      'dlq',
    ),
  );
  // Panels with inputs are kept, not redrawn, so typing is never interrupted.
  const keepDlq = focused instanceof HTMLTextAreaElement && focused.dataset['ref'] !== undefined;
  const oldDlq = body.querySelector('[data-panel="dlq"]');
  dlq.dataset['panel'] = 'dlq';
  body.replaceChildren(servers, online, tools, stages, identities, events, keepDlq && oldDlq ? oldDlq : dlq);
  if (focused instanceof HTMLElement && !keepDlq) focused.focus();
}

function toolsPanel(): HTMLElement {
  const presenceOut = h('pre', { 'data-testid': 'presence-result' });
  const presenceId = h('input', { placeholder: 'device id', 'data-testid': 'presence-id' });
  const presence = h(
    'form',
    {
      class: 'row',
      onsubmit: (ev) => {
        ev.preventDefault();
        void (async () => {
          const res = await call('GET', `/devices/${encodeURIComponent(presenceId.value)}`);
          const p = (await res.json()) as {
            online?: boolean;
            serverId?: string;
            userId?: string;
            connectedAt?: number;
            detail?: string;
          };
          presenceOut.textContent = !res.ok
            ? (p.detail ?? `HTTP ${res.status}`)
            : p.online
              ? `online on ${p.serverId} (user ${p.userId}) since ${time(p.connectedAt ?? 0)}`
              : 'offline';
        })();
      },
    },
    presenceId,
    h('button', { type: 'submit' }, 'Look up'),
  );

  const mode = h(
    'select',
    { 'data-testid': 'push-mode' },
    h('option', { value: 'direct' }, 'direct push to device'),
    h('option', { value: 'publish' }, 'publish (async) to device'),
    h('option', { value: 'publish-user' }, 'publish (async) to user'),
    h('option', { value: 'publish-topic' }, 'publish (async) to topic'),
  );
  const target = h('input', { placeholder: 'device / user / topic id', 'data-testid': 'push-target' });
  const payload = h('textarea', { rows: '2', 'data-testid': 'push-payload' });
  payload.value = '{"title":"Hello from the console"}';
  const out = h('div', { 'data-testid': 'push-result' });
  const push = h(
    'form',
    {
      onsubmit: (ev) => {
        ev.preventDefault();
        void (async () => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(payload.value);
          } catch {
            out.replaceChildren(h('span', { class: 'bad' }, 'the payload is not JSON'));
            return;
          }
          const m = mode.value;
          const body =
            m === 'direct'
              ? { mode: 'direct', deviceId: target.value, payload: parsed }
              : {
                  mode: 'publish',
                  target: { type: m === 'publish' ? 'device' : m.slice('publish-'.length), id: target.value },
                  payload: parsed,
                };
          const res = await call('POST', '/push', body);
          if (!res.ok) return void out.replaceChildren(h('span', { class: 'bad' }, await problemText(res)));
          const r = (await res.json()) as {
            status: number;
            body: { outcome?: string; latencyMs?: number; ids?: string[]; detail?: string };
            roundTripMs: number;
            traceId: string;
            traceUrl?: string;
          };
          const outcome = r.body.outcome ?? (r.status === 202 ? 'accepted (async)' : `HTTP ${r.status}`);
          out.replaceChildren(
            h(
              'div',
              {},
              'outcome ',
              h(
                'strong',
                {
                  'data-testid': 'push-outcome',
                  class: outcome === 'delivered' || r.status === 202 ? 'ok' : 'bad',
                },
                outcome,
              ),
            ),
            h(
              'div',
              {},
              `latency: ${r.body.latencyMs === undefined ? '–' : `${fmt(r.body.latencyMs, 1)} ms to the ack`} · round trip ${fmt(r.roundTripMs, 1)} ms`,
            ),
            h(
              'div',
              {},
              'trace ',
              r.traceUrl
                ? h(
                    'a',
                    { href: r.traceUrl, target: '_blank', rel: 'noopener' },
                    h('code', { 'data-testid': 'push-trace' }, r.traceId),
                  )
                : h('code', { 'data-testid': 'push-trace' }, r.traceId),
            ),
            ...(r.body.detail ? [h('div', { class: 'bad' }, r.body.detail)] : []),
          );
        })();
      },
    },
    h('div', { class: 'row' }, mode, target),
    payload,
    h('div', { class: 'row' }, h('button', { type: 'submit', 'data-testid': 'push-send' }, 'Send')),
    out,
  );
  return h(
    'section',
    {},
    h('h2', {}, 'Device presence'),
    presence,
    presenceOut,
    h('h2', {}, 'Test push'),
    push,
  );
}

void (async () => {
  const res = await call('GET', '/overview').catch(() => undefined);
  if (res?.ok) start();
  else showLogin();
})();
