import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { describe, it } from 'node:test';
import { listenForUrl, listeningUrl } from '@pushline/runtime';

describe('listeningUrl', () => {
  it('keeps a concrete IPv4 address', () => {
    assert.equal(listeningUrl({ address: '10.1.2.3', family: 'IPv4', port: 8080 }), 'http://10.1.2.3:8080');
  });

  it('brackets an IPv6 address', () => {
    assert.equal(listeningUrl({ address: '::1', family: 'IPv6', port: 8080 }), 'http://[::1]:8080');
    assert.equal(
      listeningUrl({ address: 'fe80::1', family: 'IPv6', port: 443 }, 'https'),
      'https://[fe80::1]:443',
    );
  });

  it('turns either wildcard into the IPv4 loopback', () => {
    assert.equal(listeningUrl({ address: '0.0.0.0', family: 'IPv4', port: 1 }), 'http://127.0.0.1:1');
    assert.equal(listeningUrl({ address: '::', family: 'IPv6', port: 2 }, 'https'), 'https://127.0.0.1:2');
  });
});

describe('listenForUrl', () => {
  it('resolves with a URL that reaches the server on the port it was given', async () => {
    const server = createServer((_req, res) => res.end('here'));
    try {
      const url = await listenForUrl(server, { port: 0, host: '127.0.0.1' });
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(await (await fetch(url)).text(), 'here');
    } finally {
      server.close();
      server.closeAllConnections();
      if (server.listening) await once(server, 'close');
    }
  });

  it('rejects when the port is taken, and leaves no error listener behind', async () => {
    const first = createServer();
    const second = createServer();
    try {
      const url = await listenForUrl(first, { port: 0, host: '127.0.0.1' });
      const port = Number(new URL(url).port);
      await assert.rejects(listenForUrl(second, { port, host: '127.0.0.1' }), { code: 'EADDRINUSE' });
      assert.equal(first.listenerCount('error'), 0);
      assert.equal(second.listenerCount('error'), 0);
    } finally {
      first.close();
      if (first.listening) await once(first, 'close');
    }
  });
});
