import WebSocket from 'ws';

/**
 * A device that speaks engine.io v4 and socket.io v5 packets by hand over a plain WebSocket, so a
 * test can send what no socket.io client would: broken packets, events without an ack id or with
 * extra arguments, binary attachments that never come. Every wait is bounded.
 */

export interface RawOpenOptions {
  /** Query string after `/socket.io/?`. Default `EIO=4&transport=websocket`. */
  readonly query?: string;
  /** Source address of the connection (e.g. 127.0.0.2, to look like another host). */
  readonly localAddress?: string;
  readonly deadlineMs: number;
}

export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
}

interface Waiter {
  readonly match: (frame: string) => boolean;
  readonly resolve: (frame: string | undefined) => void;
}

export class RawSocket {
  readonly ws: WebSocket;
  readonly closed: Promise<CloseInfo>;
  #isClosed = false;
  readonly #frames: string[] = [];
  #waiters: Waiter[] = [];

  private constructor(ws: WebSocket) {
    this.ws = ws;
    this.closed = new Promise<CloseInfo>((resolve) => {
      ws.once('close', (code, reason) => {
        this.#isClosed = true;
        for (const w of this.#waiters.splice(0)) w.resolve(undefined);
        resolve({ code, reason: reason.toString('utf8') });
      });
    });
    ws.on('error', () => {
      // Reported through `close`, which always follows.
    });
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      if (isBinary) return;
      const frame = Buffer.isBuffer(data)
        ? data.toString('utf8')
        : Buffer.concat(data as Buffer[]).toString('utf8');
      // engine.io v4: the server pings, the client must pong.
      if (frame === '2') {
        this.send('3');
        return;
      }
      const waiter = this.#waiters.find((w) => w.match(frame));
      if (waiter) {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        waiter.resolve(frame);
      } else {
        this.#frames.push(frame);
      }
    });
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  /**
   * Opens the WebSocket and waits for engine.io's open packet. Resolves with the socket, or with
   * why it did not open (`unexpected-response` carries the HTTP status).
   */
  static open(
    deviceUrl: string,
    options: RawOpenOptions,
  ): Promise<RawSocket | { failed: string; status?: number }> {
    const url = `${deviceUrl.replace(/^http/, 'ws')}/socket.io/?${options.query ?? 'EIO=4&transport=websocket'}`;
    return new Promise((resolve) => {
      const ws = new WebSocket(url, {
        perMessageDeflate: false,
        handshakeTimeout: options.deadlineMs,
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      });
      const raw = new RawSocket(ws);
      let done = false;
      const finish = (result: RawSocket | { failed: string; status?: number }) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (!(result instanceof RawSocket)) ws.terminate();
        resolve(result);
      };
      const timer = setTimeout(
        () => finish({ failed: 'no open packet before the deadline' }),
        options.deadlineMs,
      );
      ws.once('unexpected-response', (_req, res) => {
        finish({ failed: `HTTP ${res.statusCode}`, ...(res.statusCode ? { status: res.statusCode } : {}) });
      });
      ws.once('error', (err) => finish({ failed: err.message }));
      void raw
        .next((f) => f.startsWith('0'), options.deadlineMs)
        .then((frame) => {
          finish(frame === undefined ? { failed: 'closed before the open packet' } : raw);
        });
    });
  }

  send(data: string | Buffer, options: { binary?: boolean } = {}): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(data, { binary: options.binary ?? Buffer.isBuffer(data) });
  }

  /** The first frame (already received or to come) that matches; undefined at the deadline or on close. */
  next(match: (frame: string) => boolean, deadlineMs: number): Promise<string | undefined> {
    const index = this.#frames.findIndex(match);
    if (index >= 0) return Promise.resolve(this.#frames.splice(index, 1)[0]);
    if (this.#isClosed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        match,
        resolve: (frame) => {
          clearTimeout(timer);
          resolve(frame);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        resolve(undefined);
      }, deadlineMs);
      this.#waiters.push(waiter);
    });
  }

  /** Sends socket.io CONNECT with `auth`; resolves with the CONNECT or CONNECT_ERROR answer, or undefined. */
  async connect(
    authJson: string | undefined,
    deadlineMs: number,
  ): Promise<{ ok: true } | { ok: false; message: string } | undefined> {
    this.send(`40${authJson ?? ''}`);
    // Answers of the main namespace only (`40{`/`44{`); `44/admin,` belongs to another.
    const answer = await this.next((f) => /^4[04]\{/.test(f), deadlineMs);
    if (answer === undefined) return undefined;
    if (answer.startsWith('40')) return { ok: true };
    const body = JSON.parse(answer.slice(2)) as { message?: unknown };
    return { ok: false, message: String(body.message) };
  }

  /**
   * Sends `42<ackId><argsText>` (an EVENT whose arguments are the JSON array text given) and
   * resolves with the first argument of its ACK, `null` when the ack came without one, or
   * undefined when none came by the deadline.
   */
  async request(argsText: string, ackId: number, deadlineMs: number): Promise<unknown> {
    this.send(`42${ackId}${argsText}`);
    const prefix = `43${ackId}[`;
    const answer = await this.next((f) => f.startsWith(prefix), deadlineMs);
    if (answer === undefined) return undefined;
    const args = JSON.parse(answer.slice(prefix.length - 1)) as unknown[];
    return args.length > 0 ? args[0] : null;
  }

  /** The close, if it comes within `ms`. */
  async closedWithin(ms: number): Promise<CloseInfo | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.closed,
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING)
      this.ws.terminate();
  }
}
