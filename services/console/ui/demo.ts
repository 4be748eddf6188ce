import { PushlineClient, type PushlineMessage } from '@pushline/client';
import { h, time } from './dom.ts';

/**
 * A browser device built on @pushline/client. The token comes from the URL fragment
 * (`/demo#token=...`, never sent to any server) or is pasted; `npm start` prints such a link.
 */

const root = document.getElementById('root') as HTMLElement;
const fragment = new URLSearchParams(location.hash.slice(1));
history.replaceState(null, '', location.pathname); // Keep the token out of the address bar.

const state = h('span', { class: 'pill dim', 'data-testid': 'state' }, 'disconnected');
const urls = h('input', { size: '40', 'data-testid': 'urls', placeholder: 'device URL(s), comma-separated' });
const token = h('textarea', {
  rows: '3',
  'data-testid': 'token',
  placeholder: 'device token (npm run -s token -- --device d1 --user u1)',
});
token.value = fragment.get('token') ?? '';
const log = h('ul', { class: 'log', 'data-testid': 'messages' });
const info = h('p', { class: 'dim', 'data-testid': 'info' });
let client: PushlineClient | undefined;

const entry = (...children: (Node | string)[]) => {
  log.prepend(h('li', {}, ...children));
};

function connect(): void {
  client?.close();
  const list = urls.value
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
  if (list.length === 0 || !token.value.trim()) {
    info.textContent = 'Give a device URL and a token.';
    return;
  }
  const c = new PushlineClient({ url: list, token: () => token.value.trim() });
  client = c;
  c.on('state', ({ state: s }) => {
    state.textContent = s;
    state.className = `pill ${s === 'connected' ? 'ok' : s === 'closed' ? 'bad' : 'warn'}`;
  });
  c.on('connected', ({ url }) => (info.textContent = `connected to ${url}`));
  c.on('disconnected', (d) =>
    entry(
      h('span', { class: 'warn' }, `disconnected (${d.hint ? `hint ${d.hint.reason}` : d.reason})`),
      d.willReconnect ? ` · reconnecting in ${d.reconnectInMs ?? 0} ms` : '',
    ),
  );
  c.on('closed', (cl) =>
    entry(h('span', { class: 'bad' }, `closed: ${cl.reason}${cl.error ? ` (${cl.error.code})` : ''}`)),
  );
  c.on('error', (e) => (info.textContent = `${e.code}: ${e.message}`));
  c.on('duplicate', ({ id }) =>
    entry(h('span', { class: 'dim' }, `duplicate ${id} acked again, not shown twice`)),
  );
  c.onMessage((m: PushlineMessage) => {
    const item = h(
      'li',
      { 'data-testid': `message-${m.id}` },
      h(
        'div',
        {},
        h('code', {}, m.id),
        ' ',
        h('span', { class: 'dim' }, time(m.sentAt)),
        m.from ? ` from ${m.from}` : '',
        m.topic ? ` on ${m.topic}` : '',
      ),
      h('pre', {}, JSON.stringify(m.payload, null, 1)),
      m.trace ? h('div', { class: 'dim' }, 'trace ', h('code', {}, m.trace.traceId)) : '',
    );
    log.prepend(item);
    // Acked when this handler returns: the ack is sent as the promise resolves.
    queueMicrotask(() => item.append(h('div', { class: 'ok', 'data-testid': 'acked' }, 'acked ✓')));
  });
  c.connect();
}

const to = h('input', { placeholder: 'target device id', 'data-testid': 'send-to' });
const body = h('input', { value: '{"hi":"there"}', 'data-testid': 'send-payload' });
const sendOut = h('span', { 'data-testid': 'send-result' });

root.replaceChildren(
  h(
    'header',
    {},
    h('h1', {}, 'Pushline demo device'),
    state,
    h('span', { class: 'spacer' }),
    h('a', { href: '/console' }, 'console'),
  ),
  h(
    'main',
    {},
    h(
      'section',
      {},
      h('h2', {}, 'Connection'),
      h('div', { class: 'row' }, urls),
      token,
      h(
        'div',
        { class: 'row' },
        h('button', { onclick: connect, 'data-testid': 'connect' }, 'Connect'),
        h('button', { class: 'secondary', onclick: () => client?.close() }, 'Close'),
      ),
      info,
      h('h2', {}, 'Send to another device'),
      h(
        'form',
        {
          class: 'row',
          onsubmit: (ev) => {
            ev.preventDefault();
            if (!client) return;
            let payload: unknown;
            try {
              payload = JSON.parse(body.value);
            } catch {
              sendOut.textContent = 'payload is not JSON';
              return;
            }
            client.send(to.value, payload).then(
              (r) =>
                (sendOut.textContent = `${r.outcome}${r.latencyMs === undefined ? '' : ` in ${r.latencyMs.toFixed(1)} ms`}`),
              (err: unknown) => (sendOut.textContent = err instanceof Error ? err.message : String(err)),
            );
          },
        },
        to,
        body,
        h('button', { type: 'submit' }, 'Send'),
        sendOut,
      ),
    ),
    h('section', {}, h('h2', {}, 'Messages (each acked when handled)'), log),
  ),
);

void (async () => {
  const given = fragment.get('url');
  if (given) urls.value = given;
  else {
    const res = await fetch('/demo/config').catch(() => undefined);
    const config = res?.ok ? ((await res.json()) as { deviceUrls: string[] }) : { deviceUrls: [] };
    urls.value = config.deviceUrls.join(',');
  }
  if (token.value) connect();
})();
