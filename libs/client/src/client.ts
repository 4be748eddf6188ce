import type { AuthErrorCode, ReconnectHint } from '@pushline/protocol';
import { io, type Socket } from 'socket.io-client';
import { fullJitterDelayMs } from './backoff.ts';
import { DedupeWindow } from './dedupe.ts';
import { TypedEmitter } from './emitter.ts';
import {
  PushlineAuthError,
  PushlineError,
  PushlineSendError,
  PushlineTopicError,
  type PushlineErrorCode,
} from './errors.ts';
import { refreshAtMs, tokenExpiryMs } from './token.ts';
import { parseTraceparent } from './trace.ts';
import {
  WIRE_EVENTS,
  type ConnectionState,
  type DisconnectInfo,
  type MessageHandler,
  type PushlineClientEvents,
  type PushlineClientOptions,
  type PushlineMessage,
  type SendOptions,
  type SendOutcome,
  type SendResult,
  type TokenRequestReason,
} from './types.ts';

type Timer = ReturnType<typeof setTimeout>;
type AckAnswer = { ok: true } | { ok: false; reason?: string };

/** Codes after which the same token will never be accepted: fetch another one. */
const TOKEN_REFUSALS: ReadonlySet<string> = new Set<AuthErrorCode>([
  'token_missing',
  'token_malformed',
  'token_expired',
  'token_invalid_signature',
  'token_invalid_claims',
]);
const AUTH_CODES: ReadonlySet<string> = new Set<AuthErrorCode>([
  ...(TOKEN_REFUSALS as Set<AuthErrorCode>),
  'handshake_timeout',
  'server_draining',
]);
const REQUEST_ERROR_CODES: ReadonlySet<string> = new Set<PushlineErrorCode>([
  'invalid_request',
  'payload_too_large',
  'forbidden',
  'rate_limited',
  'too_many_subscriptions',
  'token_rejected',
  'internal',
]);
const SEND_OUTCOMES: ReadonlySet<string> = new Set<SendOutcome>([
  'delivered',
  'not_connected',
  'timeout',
  'rejected',
]);
const MESSAGE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** A token this close to `exp` is not used for a new connection (the server's clock may run ahead). */
const TOKEN_MIN_VALIDITY_MS = 5_000;
/** The server answers a send at most `timeoutMs` after it took it; this covers routing and the network. */
const SEND_ANSWER_SLACK_MS = 5_000;
const DEFAULT_SEND_TIMEOUT_MS = 5_000;

interface Waiter {
  resolve(socket: Socket): void;
  reject(err: PushlineError): void;
}

/**
 * A Pushline device: one socket.io connection to a connection server, kept up across drains,
 * crashes and token expiry, speaking docs/protocol.md. Create it, add handlers, then `connect()`.
 */
export class PushlineClient {
  readonly #urls: readonly string[];
  readonly #options: PushlineClientOptions;
  readonly #events: TypedEmitter<PushlineClientEvents>;
  readonly #handlers = new Set<MessageHandler>();
  readonly #dedupe: DedupeWindow<Promise<AckAnswer>>;
  /** Topics the app wants, restored on every connection. */
  readonly #topics = new Set<string>();
  /** subscribe() calls made while offline, settled when the topic is restored. */
  readonly #topicWaiters = new Map<string, { resolve(): void; reject(err: PushlineError): void }[]>();
  #connectionWaiters: Waiter[] = [];
  #handlerWaiters: (() => void)[] = [];

  #state: ConnectionState = 'disconnected';
  #socket: Socket | undefined;
  /** Bumped by every attempt, so events of an abandoned socket are ignored. */
  #generation = 0;
  #urlIndex = 0;
  #failedAttempts = 0;
  #authRefusalsInARow = 0;
  #reconnectTimer: Timer | undefined;
  #connectedAt = 0;
  #hint: { hint: ReconnectHint; at: number } | undefined;
  /** Handlers run one message at a time, in arrival order. */
  #handling: Promise<unknown> = Promise.resolve();

  #token: string | undefined;
  #tokenExpiresAt: number | undefined;
  #tokenFetch: Promise<string> | undefined;
  #tokenTimer: Timer | undefined;
  #tokenRefreshFailures = 0;

  constructor(options: PushlineClientOptions) {
    const urls = typeof options.url === 'string' ? [options.url] : [...options.url];
    if (urls.length === 0) throw new TypeError('PushlineClient needs at least one URL');
    this.#urls = urls;
    this.#options = options;
    this.#dedupe = new DedupeWindow(options.dedupeWindow ?? 1000);
    this.#events = new TypedEmitter((err) => {
      // A listener's bug must surface, but never inside the connection logic.
      queueMicrotask(() => {
        throw err;
      });
    });
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The URL of the current (or last) connection attempt. */
  get url(): string {
    return this.#urls[this.#urlIndex % this.#urls.length] as string;
  }

  /** Topics the client keeps subscribed across reconnects. */
  get topics(): readonly string[] {
    return [...this.#topics];
  }

  on<K extends keyof PushlineClientEvents>(
    event: K,
    listener: (value: PushlineClientEvents[K]) => void,
  ): () => void {
    return this.#events.on(event, listener);
  }

  once<K extends keyof PushlineClientEvents>(
    event: K,
    listener: (value: PushlineClientEvents[K]) => void,
  ): () => void {
    return this.#events.once(event, listener);
  }

  off<K extends keyof PushlineClientEvents>(
    event: K,
    listener: (value: PushlineClientEvents[K]) => void,
  ): void {
    this.#events.off(event, listener);
  }

  /**
   * Adds a message handler; returns a function that removes it. Messages that arrive while no
   * handler is registered wait (unacked) for one.
   */
  onMessage(handler: MessageHandler): () => void {
    this.#handlers.add(handler);
    for (const wake of this.#handlerWaiters.splice(0)) wake();
    return () => this.#handlers.delete(handler);
  }

  /** Starts connecting (again, after an idle disconnect). Does nothing while connecting or connected. */
  connect(): void {
    this.#assertOpen();
    if (this.#state !== 'disconnected') return;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    void this.#attempt();
  }

  /** Resolves once connected (at once if connected now); rejects if the client closes first. */
  whenConnected(): Promise<void> {
    return this.#connectedSocket().then(() => undefined);
  }

  /** Stops for good: closes the connection, rejects what waits for one. Idempotent. */
  close(): void {
    this.#terminate({ reason: 'client' }, new PushlineError('closed', 'the client was closed'));
  }

  /**
   * Subscribes to a topic, now and after every reconnect. Resolves once the server accepted it
   * (when offline: once the next connection restored it). Rejects with a `PushlineTopicError`
   * (`forbidden`, `too_many_subscriptions`, `invalid_request`), and the topic is dropped.
   */
  subscribe(topic: string): Promise<void> {
    this.#assertOpen();
    this.#topics.add(topic);
    const socket = this.#state === 'connected' ? this.#socket : undefined;
    if (socket) return this.#subscribeOn(socket, topic);
    return new Promise((resolve, reject) => {
      const waiters = this.#topicWaiters.get(topic) ?? [];
      waiters.push({ resolve, reject });
      this.#topicWaiters.set(topic, waiters);
    });
  }

  /** Stops restoring a topic and unsubscribes now when connected. */
  async unsubscribe(topic: string): Promise<void> {
    this.#assertOpen();
    this.#topics.delete(topic);
    for (const w of this.#topicWaiters.get(topic) ?? []) w.resolve();
    this.#topicWaiters.delete(topic);
    const socket = this.#state === 'connected' ? this.#socket : undefined;
    if (!socket) return; // Subscriptions belong to a connection: the next one will not have it.
    const answer = await this.#request(socket, WIRE_EVENTS.unsubscribe, { topic });
    const error = errorOfAnswer(answer);
    if (error) throw new PushlineTopicError(error.code, topic, error.message);
  }

  /**
   * Sends a message to another device and resolves with its outcome: `delivered`, `not_connected`,
   * `timeout`, `rejected` or `rate_limited`. While this client is reconnecting the send waits for
   * the connection; a connection lost before the answer is retried with the same id (the target
   * drops the duplicate). Past `timeoutMs` plus a routing allowance the outcome is `timeout`.
   * Rejects with a `PushlineSendError` for requests the server refuses outright
   * (`forbidden`, `payload_too_large`, `invalid_request`).
   */
  async send(to: string, payload: unknown, options: SendOptions = {}): Promise<SendResult> {
    this.#assertOpen();
    const id = options.id ?? newMessageId();
    const targetTimeoutMs = options.timeoutMs ?? DEFAULT_SEND_TIMEOUT_MS;
    const deadline = Date.now() + targetTimeoutMs + SEND_ANSWER_SLACK_MS;
    const body = {
      to,
      payload,
      id,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    };
    let internalFailures = 0;
    for (;;) {
      const socket = await this.#connectedSocket(deadline);
      if (!socket) return { id, outcome: 'timeout' };
      let answer: unknown;
      try {
        answer = await this.#request(socket, WIRE_EVENTS.send, body, deadline - Date.now());
      } catch (err) {
        if (this.#state === 'closed') throw err;
        if (Date.now() >= deadline) return { id, outcome: 'timeout' };
        continue; // The connection went away before the answer: same id on the next one.
      }
      const error = errorOfAnswer(answer);
      if (error?.code === 'rate_limited') return { id, outcome: 'rate_limited' };
      if (error?.code === 'internal' && Date.now() < deadline) {
        await this.#sleep(
          Math.min(deadline - Date.now(), 100 + fullJitterDelayMs(internalFailures++, 200, 2_000)),
        );
        continue;
      }
      if (error) throw new PushlineSendError(error.code, id, error.message);
      const ok = answer as { outcome?: unknown; latencyMs?: unknown };
      if (typeof ok.outcome !== 'string' || !SEND_OUTCOMES.has(ok.outcome)) {
        throw new PushlineSendError('protocol_error', id, `unexpected send answer ${JSON.stringify(answer)}`);
      }
      return {
        id,
        outcome: ok.outcome as SendOutcome,
        ...(typeof ok.latencyMs === 'number' ? { latencyMs: ok.latencyMs } : {}),
      };
    }
  }

  /**
   * Fetches a new token now (for the next connection; a live connection keeps the one it was
   * accepted with). The client also does this by itself ahead of `exp`.
   */
  refreshToken(): Promise<string> {
    this.#assertOpen();
    return this.#fetchToken('expiring');
  }

  /**
   * Answers the server's `token_expiring`: asks the provider for a fresh token and hands it to the
   * live connection (`refresh_token`), so the connection outlives the old token's `exp`. If the
   * provider fails or the server refuses the token, the server ends the connection with a
   * `token_expired` hint and the next connection asks the provider again.
   */
  async #answerTokenExpiring(socket: Socket): Promise<void> {
    let token: string;
    try {
      token = await this.#fetchToken('token_expiring');
    } catch (err) {
      this.#events.emit('error', asPushlineError(err, 'token_provider_failed'));
      return;
    }
    if (this.#socket !== socket || !socket.connected) return;
    const answer = await this.#request(socket, WIRE_EVENTS.refreshToken, { token }).catch((err: unknown) => ({
      ok: false,
      error: { code: 'internal', message: String(err) },
    }));
    const refused = errorOfAnswer(answer);
    if (refused) {
      // The held token is no good for this connection; the next connect fetches another.
      if (this.#token === token) this.#token = undefined;
      this.#events.emit(
        'error',
        new PushlineError(refused.code, `refresh_token refused: ${refused.message}`),
      );
    }
  }

  // --- connection lifecycle -------------------------------------------------------------------

  async #attempt(): Promise<void> {
    const generation = ++this.#generation;
    this.#setState('connecting');
    let token: string;
    try {
      token = await this.#currentToken();
    } catch (err) {
      if (generation !== this.#generation || this.#state === 'closed') return;
      this.#events.emit('error', asPushlineError(err, 'token_provider_failed'));
      this.#failedAttempts++;
      this.#scheduleReconnect({ reason: 'token_provider_failed', willReconnect: true }, this.#backoff());
      return;
    }
    if (generation !== this.#generation || this.#state === 'closed') return;
    const url = this.url;
    const socket = io(url, {
      transports: [...(this.#options.transports ?? ['websocket'])],
      reconnection: false,
      forceNew: true,
      timeout: this.#options.connectTimeoutMs ?? 10_000,
      auth: { token },
    });
    this.#socket = socket;
    const current = () => generation === this.#generation && this.#state !== 'closed';

    socket.on('connect', () => {
      if (!current()) return void socket.disconnect();
      this.#onConnected(socket, url);
    });
    socket.on('connect_error', (err: Error & { data?: { code?: unknown } }) => {
      socket.disconnect();
      if (!current()) return;
      this.#onConnectError(err, token);
    });
    socket.on('disconnect', (reason: string) => {
      if (!current() || reason === 'io client disconnect') return;
      this.#onDisconnected(reason);
    });
    socket.on(WIRE_EVENTS.reconnect, (raw: unknown) => {
      if (!current()) return;
      const hint = parseHint(raw);
      if (hint) this.#hint = { hint, at: Date.now() };
    });
    socket.on(WIRE_EVENTS.tokenExpiring, () => {
      if (current()) void this.#answerTokenExpiring(socket);
    });
    socket.on(WIRE_EVENTS.message, (raw: unknown, ack: unknown) => {
      if (typeof ack !== 'function') return; // The protocol always asks for an ack.
      this.#onMessage(raw, ack as (answer: AckAnswer) => void);
    });
  }

  #onConnected(socket: Socket, url: string): void {
    this.#connectedAt = Date.now();
    this.#authRefusalsInARow = 0;
    this.#hint = undefined;
    this.#setState('connected');
    this.#events.emit('connected', { url });
    for (const w of this.#connectionWaiters.splice(0)) w.resolve(socket);
    void this.#restoreTopics(socket);
  }

  #onConnectError(err: Error & { data?: { code?: unknown } }, usedToken: string): void {
    const code = typeof err.data?.code === 'string' ? err.data.code : err.message;
    if (AUTH_CODES.has(code) && TOKEN_REFUSALS.has(code)) {
      const authCode = code as AuthErrorCode;
      // Forget the refused token; a second refusal of a token fetched for this very reason is final.
      if (this.#token === usedToken) this.#token = undefined;
      if (++this.#authRefusalsInARow >= 2) {
        this.#terminate(
          { reason: 'auth_failed' },
          new PushlineAuthError(authCode, `the server refused a fresh token: ${code}`),
        );
        return;
      }
      this.#events.emit(
        'error',
        new PushlineAuthError(authCode, `token refused (${code}); fetching a new one`),
      );
      this.#setState('disconnected');
      void this.#fetchToken('auth_error', authCode).then(
        () => this.#scheduleReconnect({ reason: code, willReconnect: true }, 0),
        (fetchErr: unknown) => {
          if (this.#state === 'closed') return;
          this.#events.emit('error', asPushlineError(fetchErr, 'token_provider_failed'));
          this.#failedAttempts++;
          this.#scheduleReconnect({ reason: code, willReconnect: true }, this.#backoff());
        },
      );
      return;
    }
    this.#events.emit(
      'error',
      new PushlineError(
        AUTH_CODES.has(code) ? (code as AuthErrorCode) : 'connect_failed',
        `connect failed: ${code}`,
        {
          cause: err,
        },
      ),
    );
    // Another server (when given a list) for the next attempt: this one failed.
    this.#urlIndex++;
    // A draining server is not a failure of the fleet: the first retry goes at once.
    const delay = code === 'server_draining' && this.#failedAttempts === 0 ? 0 : this.#backoff();
    this.#failedAttempts++;
    this.#scheduleReconnect({ reason: code, willReconnect: true }, delay);
  }

  #onDisconnected(reason: string): void {
    if (Date.now() - this.#connectedAt >= (this.#options.reconnect?.stableAfterMs ?? 30_000)) {
      this.#failedAttempts = 0;
    }
    const hinted = this.#hint;
    this.#hint = undefined;
    this.#socket = undefined;
    if (hinted?.hint.reason === 'replaced') {
      this.#terminate(
        { reason: 'replaced' },
        new PushlineError('replaced', 'another connection with this device id took over'),
      );
      return;
    }
    if (hinted?.hint.reason === 'idle') {
      this.#setState('disconnected');
      this.#events.emit('disconnected', { reason, hint: hinted.hint, willReconnect: false });
      return;
    }
    if (hinted?.hint.reason === 'token_expired') {
      // The connection's token ran out unrefreshed: the next connection must not offer it again.
      this.#token = undefined;
    }
    if (hinted) {
      // server_shutdown / lifetime_expired / token_expired: wait `afterMs` from the hint (not from the close).
      if (hinted.hint.reason === 'server_shutdown') this.#urlIndex++;
      const delay = Math.max(0, hinted.at + hinted.hint.afterMs - Date.now());
      this.#scheduleReconnect({ reason, hint: hinted.hint, willReconnect: true }, delay);
      return;
    }
    this.#urlIndex++;
    const delay = this.#backoff();
    this.#failedAttempts++;
    this.#scheduleReconnect({ reason, willReconnect: true }, delay);
  }

  #scheduleReconnect(info: DisconnectInfo, delayMs: number): void {
    if (this.#state === 'closed') return;
    this.#setState('disconnected');
    this.#events.emit('disconnected', { ...info, reconnectInMs: delayMs });
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (this.#state === 'disconnected') void this.#attempt();
    }, delayMs);
  }

  #backoff(): number {
    const r = this.#options.reconnect;
    return fullJitterDelayMs(this.#failedAttempts, r?.initialDelayMs ?? 1_000, r?.maxDelayMs ?? 60_000);
  }

  #terminate(info: PushlineClientEvents['closed'], error: PushlineError): void {
    if (this.#state === 'closed') return;
    this.#generation++;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#tokenTimer);
    const socket = this.#socket;
    this.#socket = undefined;
    socket?.disconnect();
    this.#setState('closed');
    for (const w of this.#connectionWaiters.splice(0)) w.reject(error);
    for (const waiters of this.#topicWaiters.values()) for (const w of waiters) w.reject(error);
    this.#topicWaiters.clear();
    this.#events.emit('closed', info.reason === 'client' ? info : { ...info, error });
  }

  #setState(state: ConnectionState): void {
    const previous = this.#state;
    if (previous === state || previous === 'closed') return;
    this.#state = state;
    this.#events.emit('state', { state, previous });
  }

  #assertOpen(): void {
    if (this.#state === 'closed') throw new PushlineError('closed', 'the client is closed');
  }

  /** The live socket, waiting for one until `deadline` (undefined past it); rejects once closed. */
  #connectedSocket(deadline?: number): Promise<Socket | undefined> {
    if (this.#state === 'connected' && this.#socket) return Promise.resolve(this.#socket);
    if (this.#state === 'closed') return Promise.reject(new PushlineError('closed', 'the client is closed'));
    return new Promise((resolve, reject) => {
      let timer: Timer | undefined;
      const waiter: Waiter = {
        resolve: (socket) => {
          clearTimeout(timer);
          resolve(socket);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.#connectionWaiters.push(waiter);
      if (deadline !== undefined) {
        timer = setTimeout(
          () => {
            this.#connectionWaiters = this.#connectionWaiters.filter((w) => w !== waiter);
            resolve(undefined);
          },
          Math.max(0, deadline - Date.now()),
        );
      }
    });
  }

  #request(socket: Socket, event: string, body: unknown, timeoutMs?: number): Promise<unknown> {
    const ms = Math.max(1, timeoutMs ?? this.#options.requestTimeoutMs ?? 10_000);
    return (socket.timeout(ms).emitWithAck(event, body) as Promise<unknown>).catch((err: unknown) => {
      throw new PushlineError('request_timeout', `no answer to ${event} within ${ms} ms`, { cause: err });
    });
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // --- topics -----------------------------------------------------------------------------------

  async #subscribeOn(socket: Socket, topic: string): Promise<void> {
    const answer = await this.#request(socket, WIRE_EVENTS.subscribe, { topic });
    const error = errorOfAnswer(answer);
    if (!error) return;
    this.#topics.delete(topic);
    throw new PushlineTopicError(error.code, topic, error.message);
  }

  async #restoreTopics(socket: Socket): Promise<void> {
    await Promise.all(
      [...this.#topics].map(async (topic) => {
        try {
          await this.#subscribeOn(socket, topic);
          for (const w of this.#topicWaiters.get(topic) ?? []) w.resolve();
          this.#topicWaiters.delete(topic);
        } catch (err) {
          if (err instanceof PushlineTopicError) {
            for (const w of this.#topicWaiters.get(topic) ?? []) w.reject(err);
            this.#topicWaiters.delete(topic);
            this.#events.emit('subscriptionFailed', { topic, error: err });
          }
          // A lost connection keeps the topic: the next connection restores it.
        }
      }),
    );
  }

  // --- messages ---------------------------------------------------------------------------------

  #onMessage(raw: unknown, ack: (answer: AckAnswer) => void): void {
    const message = parseMessage(raw);
    if (!message) {
      ack({ ok: false, reason: 'invalid_message' });
      this.#events.emit('error', new PushlineError('protocol_error', 'the server sent a malformed message'));
      return;
    }
    // Device-to-device ids are chosen by each sender, so they are unique per sender only.
    const dedupeKey = message.from === undefined ? message.id : `${message.from}\u0000${message.id}`;
    const known = this.#dedupe.get(dedupeKey);
    if (known) {
      this.#events.emit('duplicate', { id: message.id });
      void known.then(ack);
      return;
    }
    const answer = this.#handling.then(() => this.#handle(message));
    this.#handling = answer;
    this.#dedupe.remember(dedupeKey, answer);
    void answer.then(ack);
  }

  async #handle(message: PushlineMessage): Promise<AckAnswer> {
    while (this.#handlers.size === 0) {
      await new Promise<void>((resolve) => this.#handlerWaiters.push(resolve));
    }
    let timer: Timer | undefined;
    const limitMs = this.#options.handlerTimeoutMs ?? 10_000;
    // Handlers run one at a time; a handler that never settles must not hold up every later message.
    const timedOut = new Promise<AckAnswer>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, reason: 'handler_timeout' }), limitMs);
    });
    // async: a handler that throws at once is a rejection here too, answered like a failed one.
    const handled = Promise.all([...this.#handlers].map(async (handler) => handler(message))).then(
      (): AckAnswer => ({ ok: true }),
      (err: unknown): AckAnswer => {
        const reason = err instanceof Error ? err.message : String(err);
        return { ok: false, reason: reason.slice(0, 256) };
      },
    );
    try {
      return await Promise.race([handled, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  // --- tokens -----------------------------------------------------------------------------------

  /** The held token if it is valid for a while yet, else a fresh one. */
  #currentToken(): Promise<string> {
    const expiresAt = this.#tokenExpiresAt;
    if (this.#token && (expiresAt === undefined || expiresAt - Date.now() > TOKEN_MIN_VALIDITY_MS)) {
      return Promise.resolve(this.#token);
    }
    return this.#fetchToken(this.#token ? 'expiring' : 'connect');
  }

  /** One provider call at a time; concurrent callers share it. */
  #fetchToken(reason: TokenRequestReason, code?: AuthErrorCode): Promise<string> {
    if (this.#tokenFetch) return this.#tokenFetch;
    const fetching = (async () => {
      let token: unknown;
      try {
        token = await this.#options.token(code ? { reason, code } : { reason });
      } catch (err) {
        throw asPushlineError(err, 'token_provider_failed');
      }
      if (typeof token !== 'string' || token.length === 0) {
        throw new PushlineError('token_provider_failed', 'the token provider returned no token');
      }
      this.#token = token;
      this.#tokenExpiresAt = tokenExpiryMs(token);
      this.#tokenRefreshFailures = 0;
      this.#scheduleTokenRefresh();
      return token;
    })();
    this.#tokenFetch = fetching;
    const clear = () => {
      if (this.#tokenFetch === fetching) this.#tokenFetch = undefined;
    };
    fetching.then(clear, clear);
    return fetching;
  }

  #scheduleTokenRefresh(): void {
    clearTimeout(this.#tokenTimer);
    const expiresAt = this.#tokenExpiresAt;
    // A token (nearly) expired already is not renewed ahead: the server refuses it, and the
    // refusal asks for the next one with its reason.
    if (
      expiresAt === undefined ||
      this.#state === 'closed' ||
      expiresAt - Date.now() <= TOKEN_MIN_VALIDITY_MS
    )
      return;
    const at = refreshAtMs(Date.now(), expiresAt, this.#options.tokenRefreshMarginMs ?? 60_000);
    this.#tokenTimer = setTimeout(() => this.#refreshAhead(), Math.max(0, at - Date.now()));
    // A pending renewal alone must not keep a Node process alive (browsers have no unref).
    (this.#tokenTimer as { unref?: () => void }).unref?.();
  }

  #refreshAhead(): void {
    if (this.#state === 'closed') return;
    this.#fetchToken('expiring').catch((err: unknown) => {
      if (this.#state === 'closed') return;
      this.#events.emit('error', asPushlineError(err, 'token_provider_failed'));
      this.#tokenTimer = setTimeout(
        () => this.#refreshAhead(),
        1_000 + fullJitterDelayMs(this.#tokenRefreshFailures++, 1_000, 60_000),
      );
      (this.#tokenTimer as { unref?: () => void }).unref?.();
    });
  }
}

function asPushlineError(err: unknown, code: PushlineErrorCode): PushlineError {
  if (err instanceof PushlineError) return err;
  return new PushlineError(code, err instanceof Error ? err.message : String(err), { cause: err });
}

function errorOfAnswer(answer: unknown): { code: PushlineErrorCode; message: string } | undefined {
  if (typeof answer !== 'object' || answer === null) {
    return { code: 'protocol_error', message: `unexpected answer ${JSON.stringify(answer)}` };
  }
  const a = answer as { ok?: unknown; error?: { code?: unknown; message?: unknown } };
  if (a.ok === true) return undefined;
  const code = a.error?.code;
  return typeof code === 'string' && REQUEST_ERROR_CODES.has(code)
    ? {
        code: code as PushlineErrorCode,
        message: typeof a.error?.message === 'string' ? a.error.message : code,
      }
    : { code: 'protocol_error', message: `unexpected answer ${JSON.stringify(answer)}` };
}

function parseHint(raw: unknown): ReconnectHint | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const { reason, afterMs } = raw as { reason?: unknown; afterMs?: unknown };
  if (typeof reason !== 'string' || typeof afterMs !== 'number' || !(afterMs >= 0)) return undefined;
  if (!['server_shutdown', 'lifetime_expired', 'replaced', 'idle', 'token_expired'].includes(reason))
    return undefined;
  return { reason: reason as ReconnectHint['reason'], afterMs };
}

function parseMessage(raw: unknown): PushlineMessage | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const m = raw as Record<string, unknown>;
  if (typeof m['id'] !== 'string' || !MESSAGE_ID.test(m['id']) || !('payload' in m)) return undefined;
  const str = (key: string) => (typeof m[key] === 'string' ? { [key]: m[key] } : {});
  const traceparent = typeof m['traceparent'] === 'string' ? m['traceparent'] : undefined;
  const trace = parseTraceparent(traceparent);
  return {
    id: m['id'],
    payload: m['payload'],
    sentAt: typeof m['sentAt'] === 'number' ? m['sentAt'] : Date.now(),
    ...str('from'),
    ...str('topic'),
    ...str('traceparent'),
    ...str('tracestate'),
    ...(trace ? { trace } : {}),
  };
}

/** An id the server accepts (`A–Z a–z 0–9 . _ : -`), unique enough to be an idempotency key. */
export function newMessageId(): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return `c-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}
