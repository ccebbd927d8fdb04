// @ts-check
/**
 * The relay connection (docs/api.md, "The relay"; client/transport.py): binary frames over
 * one WebSocket, reconnecting by itself.
 *
 * Requests. Each SEND gets a fresh request id and is encoded once; it stays pending until
 * the server answers it (SEND_OK, DEVICE_MISMATCH or ERROR), across any number of
 * reconnections: after each one every pending SEND is written again, byte for byte and in
 * its original order, before anything else. A SEND answered twice is harmless: the
 * recipient's ratchet drops the second copy as DUPLICATE_MESSAGE.
 *
 * Pushes (DELIVER, QUEUE_EMPTY, NOTICE) go to `onPush` one at a time, in order. Those still
 * queued when their connection dies are dropped: the server redelivers whatever was not
 * acknowledged.
 *
 * Reconnection waits with exponential backoff and full jitter, a uniform delay in
 * [0, min(cap, base * 2**attempt)], which spreads a crowd of clients out after a server
 * restart. It stops for good only when the device is revoked (close code 4403). Browsers
 * cannot send WebSocket pings, so keepalive is the protocol's own PING every 25 s; no PONG
 * within 10 s drops the connection.
 */

import {
  Ack,
  Deliver,
  DeviceMismatch,
  ErrorFrame,
  GroupSend,
  Notice,
  Ping,
  Pong,
  ProtocolError,
  QueueEmpty,
  Send,
  SendOk,
  decodeFrame,
  encodeFrame,
} from '../protocol/index.js';
import { ClientError, LocalCode, asClientError } from './errors.js';

export const SUBPROTOCOL = 'sealpost.v1';
export const TOKEN_PREFIX = 'sealpost.token.';
export const REVOKED_CLOSE_CODE = 4403;

/** @typedef {'offline' | 'connecting' | 'online'} ConnectionState */
/** @typedef {SendOk | DeviceMismatch | ErrorFrame} Reply */
/** @typedef {Deliver | QueueEmpty | Notice} Push */
/** @typedef {{data: Uint8Array, resolve: (reply: Reply) => void, reject: (error: unknown) => void}} Pending */

/** @param {string} baseUrl http(s)://host[/prefix] → ws(s)://host[/prefix]/ws/v1/ */
export function relayUrl(baseUrl) {
  const url = new URL(baseUrl);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/ws/v1/`;
  url.search = url.hash = '';
  return url.href;
}

/**
 * Exponential backoff with full jitter: attempt n (from 0) waits U(0, min(cap, base * 2**n)).
 * @param {number} attempt
 * @param {number} uniform a draw from [0, 1)
 * @param {number} baseMs
 * @param {number} capMs
 */
export function backoffDelay(attempt, uniform, baseMs, capMs) {
  return uniform * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 64));
}

export class Relay extends EventTarget {
  /**
   * Events: 'state' {state}, 'failed' {error} (terminal), 'push-error' {error}.
   * @param {{url: string, token: string, onPush: (push: Push) => Promise<void>,
   *   WebSocket?: typeof globalThis.WebSocket, baseMs?: number, capMs?: number,
   *   pingIntervalMs?: number, pongTimeoutMs?: number, openTimeoutMs?: number,
   *   random?: () => number}} options
   */
  constructor({
    url,
    token,
    onPush,
    WebSocket = globalThis.WebSocket,
    baseMs = 200,
    capMs = 10_000,
    pingIntervalMs = 25_000,
    pongTimeoutMs = 10_000,
    openTimeoutMs = 10_000,
    random = Math.random,
  }) {
    super();
    this.url = url;
    this._protocols = [SUBPROTOCOL, TOKEN_PREFIX + token];
    this._onPush = onPush;
    this._WebSocket = WebSocket;
    this._timing = { baseMs, capMs, pingIntervalMs, pongTimeoutMs, openTimeoutMs };
    this._random = random;
    this._nextId = 1;
    /** @type {Map<number, Pending>} insertion order = send order */
    this._pending = new Map();
    /** @type {WebSocket | null} */
    this._ws = null;
    this._generation = 0;
    /** @type {ConnectionState} */
    this._state = 'offline';
    this._closed = false;
    /** @type {ClientError | null} */
    this._failure = null;
    this._attempt = 0;
    this._heard = false;
    /** @type {Promise<void>} */
    this._pushes = Promise.resolve();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._retryTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._pingTimer = undefined;
    /** @type {Map<number, ReturnType<typeof setTimeout>>} */
    this._pings = new Map();
    /** Whether QUEUE_EMPTY arrived on the current connection. */
    this.backlogDelivered = false;
    /** Pushes received and not yet handled by `onPush`. */
    this.queuedPushes = 0;
    this.connections = 0; // successful handshakes (diagnostics and tests)
  }

  /** @returns {ConnectionState} */
  get state() {
    return this._state;
  }

  /** @param {ConnectionState} state */
  _setState(state) {
    if (state === this._state) return;
    this._state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state } }));
  }

  // --- lifecycle --------------------------------------------------------------------

  /** Connect once (rejecting `unreachable` on failure); afterwards reconnect by itself. */
  async start() {
    if (this._closed) throw new ClientError(LocalCode.CLOSED, 'this relay connection was closed');
    this._setState('connecting');
    try {
      this._serve(await this._open());
    } catch (error) {
      this._setState('offline');
      throw error;
    }
  }

  close() {
    this._closed = true;
    clearTimeout(this._retryTimer);
    this._drop();
    this._fail(new ClientError(LocalCode.CLOSED, 'the relay connection was closed'));
    this._setState('offline');
  }

  /** @returns {Promise<WebSocket>} */
  _open() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this._WebSocket(this.url, this._protocols);
      } catch (error) {
        reject(new ClientError(LocalCode.UNREACHABLE, `cannot open ${this.url}: ${error}`));
        return;
      }
      ws.binaryType = 'arraybuffer';
      const timer = setTimeout(() => fail('no answer in time'), this._timing.openTimeoutMs);
      /** @param {string} reason */
      const fail = (reason) => {
        clearTimeout(timer);
        ws.onopen = ws.onclose = ws.onerror = null;
        try {
          ws.close();
        } catch {
          // never opened
        }
        reject(new ClientError(LocalCode.UNREACHABLE, `cannot connect to ${this.url}: ${reason}`));
      };
      ws.onerror = () => fail('the handshake failed');
      ws.onclose = (event) => fail(`closed (${event.code})`);
      ws.onopen = () => {
        clearTimeout(timer);
        if (ws.protocol !== SUBPROTOCOL) fail(`the server did not select ${SUBPROTOCOL}`);
        else if (this._closed) fail('closed meanwhile');
        else resolve(ws);
      };
    });
  }

  /** @param {WebSocket} ws */
  _serve(ws) {
    this.connections += 1;
    const generation = ++this._generation;
    this._ws = ws;
    this._heard = false;
    this.backlogDelivered = false;
    ws.onmessage = (event) => {
      this._heard = true;
      if (typeof event.data === 'string') return; // never sent by the relay; not a frame
      this._receive(new Uint8Array(event.data), generation);
    };
    ws.onerror = () => {}; // a close event follows
    ws.onclose = (event) => this._lost(event.code);
    for (const pending of this._pending.values()) ws.send(/** @type {Uint8Array<ArrayBuffer>} */ (pending.data));
    this._pingTimer = setInterval(() => this._ping(), this._timing.pingIntervalMs);
    this._setState('online');
  }

  /** Detach from the current socket (if any) and close it. */
  _drop() {
    const ws = this._ws;
    this._ws = null;
    clearInterval(this._pingTimer);
    for (const timer of this._pings.values()) clearTimeout(timer);
    this._pings.clear();
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close();
      } catch {
        // closing already
      }
    }
  }

  /** @param {number | null} code */
  _lost(code) {
    this._drop();
    if (this._closed) return;
    if (code === REVOKED_CLOSE_CODE) {
      const error = new ClientError('unauthorized', 'the server revoked this device');
      this._closed = true;
      this._fail(error);
      this._setState('offline');
      this.dispatchEvent(new CustomEvent('failed', { detail: { error } }));
      return;
    }
    if (this._heard) this._attempt = 0; // the server spoke: that was a working connection
    this._setState('connecting');
    this._retry();
  }

  _retry() {
    const { baseMs, capMs } = this._timing;
    const delay = backoffDelay(this._attempt, this._random(), baseMs, capMs);
    this._attempt += 1;
    this._retryTimer = setTimeout(async () => {
      try {
        const ws = await this._open();
        if (this._closed) ws.close();
        else this._serve(ws);
      } catch {
        if (!this._closed) this._retry();
      }
    }, delay);
  }

  /** @param {ClientError} error */
  _fail(error) {
    this._failure = error;
    for (const pending of this._pending.values()) pending.reject(error);
    this._pending.clear();
  }

  // --- frames in --------------------------------------------------------------------

  /**
   * @param {Uint8Array} data
   * @param {number} generation
   */
  _receive(data, generation) {
    let frame;
    try {
      frame = decodeFrame(data);
    } catch (error) {
      if (error instanceof ProtocolError) return; // an undecodable frame is ignored
      throw error;
    }
    if (frame instanceof SendOk || frame instanceof DeviceMismatch || frame instanceof ErrorFrame) {
      const pending = this._pending.get(Number(frame.requestId));
      if (pending) {
        this._pending.delete(Number(frame.requestId));
        pending.resolve(frame);
      }
      // else: the answer to an ACK (unknown_envelope after a redelivery) or to a request
      // nobody waits for any more.
    } else if (frame instanceof Pong) {
      clearTimeout(this._pings.get(Number(frame.requestId)));
      this._pings.delete(Number(frame.requestId));
    } else if (frame instanceof Ping) {
      this._send(encodeFrame(new Pong({ requestId: frame.requestId })));
    } else if (frame instanceof Deliver || frame instanceof QueueEmpty || frame instanceof Notice) {
      const push = frame;
      this.queuedPushes += 1;
      this._pushes = this._pushes.then(async () => {
        this.queuedPushes -= 1;
        if (generation !== this._generation || this._closed) return; // redelivered anyway
        if (push instanceof QueueEmpty) this.backlogDelivered = true;
        try {
          await this._onPush(push);
        } catch (error) {
          this.dispatchEvent(new CustomEvent('push-error', { detail: { error } }));
        }
      });
    }
  }

  // --- frames out -------------------------------------------------------------------

  /** @param {Uint8Array} data */
  _send(data) {
    if (this._state !== 'online' || !this._ws) return false;
    try {
      this._ws.send(/** @type {Uint8Array<ArrayBuffer>} */ (data));
      return true;
    } catch {
      return false; // the close event follows
    }
  }

  /**
   * Send a SEND or GROUP_SEND (its request id replaced by a fresh one) and wait for the answer, across
   * reconnections if need be. Rejects only when the relay is closed or fails for good.
   * @param {Send | GroupSend} frame
   * @returns {Promise<Reply>}
   */
  request(frame) {
    if (this._failure) return Promise.reject(this._failure);
    const requestId = this._nextId++;
    let data;
    try {
      const { flags, ttlSeconds } = frame;
      data = encodeFrame(
        frame instanceof GroupSend
          ? new GroupSend({ requestId, groupId: frame.groupId, rosterDigest: frame.rosterDigest, payload: frame.payload, flags, ttlSeconds })
          : new Send({ requestId, recipient: frame.recipient, messages: frame.messages, flags, ttlSeconds }),
      );
    } catch (error) {
      return Promise.reject(asClientError(error));
    }
    return new Promise((resolve, reject) => {
      this._pending.set(requestId, { data, resolve, reject });
      this._send(data); // if offline, the next connection writes it
    });
  }

  /**
   * Acknowledge stored envelopes. Best effort: an ACK lost with its connection only means
   * the envelope comes again, and is then dropped as a duplicate.
   * @param {import('../protocol/encoding.js').Uint64[]} seqs
   */
  ack(seqs) {
    return seqs.length > 0 && this._send(encodeFrame(new Ack({ requestId: this._nextId++, seqs })));
  }

  _ping() {
    const ws = this._ws;
    const requestId = this._nextId++;
    if (!this._send(encodeFrame(new Ping({ requestId })))) return;
    this._pings.set(
      requestId,
      setTimeout(() => {
        if (this._ws === ws) this._lost(null); // no PONG: the connection is dead
      }, this._timing.pongTimeoutMs),
    );
  }
}
