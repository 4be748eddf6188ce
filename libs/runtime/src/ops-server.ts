import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { Registry } from '@pushline/telemetry';
import { closeOnce } from './lifecycle.ts';
import { listenForUrl } from './listen.ts';

export type ReadinessCheck = () => Promise<{ ok: boolean; detail?: Record<string, unknown> }>;

/** Handles a request the ops routes do not; returns false to fall through to 404. */
export type ExtraRoute = (req: IncomingMessage, res: ServerResponse) => boolean | Promise<boolean>;

export interface OpsServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly metrics: Registry;
  readonly ready: ReadinessCheck;
  readonly routes?: ExtraRoute;
  /** Serve HTTPS with this certificate and key (PEM) instead of plain HTTP. */
  readonly tls?: { readonly cert: string | Buffer; readonly key: string | Buffer } | undefined;
}

/**
 * Health, readiness and Prometheus metrics on a plain node:http server (no framework on the
 * internal port, which also carries delivery traffic between services).
 */
export class OpsServer {
  readonly #options: OpsServerOptions;
  readonly #server: Server;
  #url: string | undefined;
  readonly close: () => Promise<void>;

  constructor(options: OpsServerOptions) {
    this.#options = options;
    const handle = (req: IncomingMessage, res: ServerResponse) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, { error: String(err) });
        else res.destroy();
      });
    };
    this.#server = options.tls
      ? createTlsServer({ cert: options.tls.cert, key: options.tls.key }, handle)
      : createServer(handle);
    this.#server.keepAliveTimeout = 65_000;
    this.close = closeOnce(() => this.#close());
  }

  get url(): string {
    if (!this.#url) throw new Error('OpsServer not started');
    return this.#url;
  }

  get server(): Server {
    return this.#server;
  }

  async start(): Promise<void> {
    this.#url = await listenForUrl(
      this.#server,
      { port: this.#options.port, host: this.#options.host },
      this.#options.tls ? 'https' : 'http',
    );
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/healthz') return sendJson(res, 200, { status: 'ok' });
    if (req.method === 'GET' && path === '/readyz') {
      const result = await this.#options.ready();
      return sendJson(res, result.ok ? 200 : 503, {
        status: result.ok ? 'ready' : 'not_ready',
        ...result.detail,
      });
    }
    if (req.method === 'GET' && path === '/metrics') {
      const body = await this.#options.metrics.metrics();
      res.writeHead(200, { 'content-type': this.#options.metrics.contentType });
      res.end(body);
      return;
    }
    if (this.#options.routes && (await this.#options.routes(req, res))) return;
    sendJson(res, 404, { error: 'not_found' });
  }

  async #close(): Promise<void> {
    if (!this.#server.listening) return;
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeIdleConnections();
    });
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Reads a request body up to `limit` bytes; rejects with `BodyTooLargeError` past it. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > limit) throw new BodyTooLargeError(limit);
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}

export class BodyTooLargeError extends Error {
  override readonly name = 'BodyTooLargeError';
  readonly limit: number;
  constructor(limit: number) {
    super(`request body exceeds ${limit} bytes`);
    this.limit = limit;
  }
}
