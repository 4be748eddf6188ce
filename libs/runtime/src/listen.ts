import type { AddressInfo, ListenOptions, Server } from 'node:net';

/**
 * The base URL a client on this host reaches a bound address at. A wildcard address (`0.0.0.0`,
 * `::`) becomes `127.0.0.1`, which a dual-stack `::` socket (Node's default) accepts too; any
 * other IPv6 address is bracketed, as URLs require.
 */
export function listeningUrl(address: AddressInfo, scheme: 'http' | 'https' = 'http'): string {
  const host =
    address.address === '0.0.0.0' || address.address === '::'
      ? '127.0.0.1'
      : address.family === 'IPv6'
        ? `[${address.address}]`
        : address.address;
  return `${scheme}://${host}:${address.port}`;
}

/** Listens, rejecting on a bind error (a port in use), and resolves with the `listeningUrl` of the bound address. */
export async function listenForUrl(
  server: Server,
  options: ListenOptions,
  scheme: 'http' | 'https' = 'http',
): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return listeningUrl(server.address() as AddressInfo, scheme);
}
