import { connect } from 'node:net';

/**
 * A minimal HTTP/1.1 client over a plain TCP socket. Unlike fetch or node:http it sends the path,
 * method and headers exactly as given (a lone `%`, a method fetch would refuse, raw bytes in a
 * header), and it bounds the whole exchange: an answer that is not complete by the deadline is a
 * hang, never a stuck test.
 */

export interface RawRequest {
  readonly method: string;
  /** Sent as is on the request line. */
  readonly path: string;
  /** Sent in order, as is; `host` and `connection: close` are added unless given. */
  readonly headers?: readonly (readonly [string, string])[];
  readonly body?: string | Buffer;
  /** Whether to add `content-length` for the body. Default true. */
  readonly contentLength?: boolean;
  /** Replaces the whole request (request line, headers, body) with these bytes. */
  readonly raw?: Buffer;
  readonly deadlineMs: number;
}

interface RawResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

export type RawResult =
  | { readonly kind: 'response'; readonly response: RawResponse }
  | { readonly kind: 'hang'; readonly bytes: number }
  | { readonly kind: 'closed'; readonly error: string | undefined };

interface ParsedHead {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly bodyStart: number;
}

function parseHead(data: Buffer): ParsedHead | undefined {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = data.subarray(0, end).toString('latin1').split('\r\n');
  const statusLine = lines[0] ?? '';
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!match) return { status: -1, headers: {}, bodyStart: end + 4 };
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return { status: Number(match[1]), headers, bodyStart: end + 4 };
}

/** The body once complete (by content-length or chunked framing), or undefined while more must come. */
function completeBody(head: ParsedHead, data: Buffer, method: string, ended: boolean): Buffer | undefined {
  const rest = data.subarray(head.bodyStart);
  if (method === 'HEAD' || head.status === 204 || head.status === 304 || head.status === 101) {
    return Buffer.alloc(0);
  }
  const length = head.headers['content-length'];
  if (length !== undefined) {
    const n = Number(length);
    return rest.length >= n ? rest.subarray(0, n) : undefined;
  }
  if (/chunked/i.test(head.headers['transfer-encoding'] ?? '')) {
    const chunks: Buffer[] = [];
    let at = 0;
    for (;;) {
      const lineEnd = rest.indexOf('\r\n', at);
      if (lineEnd < 0) return undefined;
      const size = parseInt(rest.subarray(at, lineEnd).toString('latin1'), 16);
      if (Number.isNaN(size)) return Buffer.concat(chunks);
      if (size === 0) return Buffer.concat(chunks);
      if (rest.length < lineEnd + 2 + size + 2) return undefined;
      chunks.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
  }
  // No framing: the body runs to the end of the connection.
  return ended ? rest : undefined;
}

function requestBytes(url: URL, req: RawRequest): Buffer {
  if (req.raw) return req.raw;
  const headers = [...(req.headers ?? [])];
  const has = (name: string) => headers.some(([n]) => n.toLowerCase() === name);
  if (!has('host')) headers.unshift(['host', url.host]);
  if (!has('connection')) headers.push(['connection', 'close']);
  const body =
    req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body);
  if (body && (req.contentLength ?? true) && !has('content-length') && !has('transfer-encoding')) {
    headers.push(['content-length', String(body.length)]);
  }
  const head = `${req.method} ${req.path} HTTP/1.1\r\n${headers.map(([n, v]) => `${n}: ${v}`).join('\r\n')}\r\n\r\n`;
  return body ? Buffer.concat([Buffer.from(head, 'latin1'), body]) : Buffer.from(head, 'latin1');
}

/** Sends one request on a new connection and resolves with the answer, a hang, or a close without an answer. */
export function rawHttp(baseUrl: string, req: RawRequest): Promise<RawResult> {
  const url = new URL(baseUrl);
  return new Promise<RawResult>((resolve) => {
    let data = Buffer.alloc(0);
    let settled = false;
    const socket = connect({ host: url.hostname, port: Number(url.port) });
    const finish = (result: RawResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const tryComplete = (ended: boolean) => {
      const head = parseHead(data);
      if (!head) return false;
      const body = completeBody(head, data, req.method, ended);
      if (!body) return false;
      finish({ kind: 'response', response: { status: head.status, headers: head.headers, body } });
      return true;
    };
    const timer = setTimeout(() => finish({ kind: 'hang', bytes: data.length }), req.deadlineMs);
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      tryComplete(false);
    });
    socket.on('end', () => {
      if (!tryComplete(true))
        finish({ kind: 'closed', error: data.length ? 'incomplete answer' : undefined });
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A server that answers before reading a large body may reset while we still write: the
      // answer it sent first still counts.
      if (!tryComplete(true)) finish({ kind: 'closed', error: err.code ?? err.message });
    });
    socket.on('connect', () => {
      socket.write(requestBytes(url, req), () => {});
    });
  });
}
