// api.js and relay.js without a server: a fake fetch and a fake WebSocket.

import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';

import {
  DeviceMessage,
  FrameType,
  Pong,
  Send,
  SendOk,
  decodeFrame,
  encodeFrame,
} from '../../../static/js/protocol/index.js';
import {
  Api,
  ClientError,
  Relay,
  backoffDelay,
  fromBase64,
  relayUrl,
  toBase64,
} from '../../../static/js/app/index.js';
import { sleep, until } from './live.mjs';

describe('api.js', () => {
  afterEach(() => {
    delete globalThis.document;
  });

  /** A fetch that records its calls and answers `status` with `body`. */
  function fakeFetch(status, body, headers = {}) {
    const calls = [];
    const fetch = async (url, init) => {
      calls.push({ url, ...init });
      return new Response(body === undefined ? null : JSON.stringify(body), { status, headers });
    };
    return { calls, fetch };
  }

  test('bearer token, CSRF header from the cookie on unsafe methods, JSON both ways', async () => {
    globalThis.document = /** @type {any} */ ({ cookie: 'sessionid=x; csrftoken=abc%3D1; other=y' });
    const { calls, fetch } = fakeFetch(200, { one_time_prekeys: 5, kem_prekeys: 6, low_watermark: 10, max_stored: 1000 });
    const api = new Api({ baseUrl: 'https://chat.example/', token: 'tok', fetch });
    assert.deepEqual(await api.prekeyCounts(), { oneTimePrekeys: 5, kemPrekeys: 6, lowWatermark: 10, maxStored: 1000 });
    await api.uploadPrekeys([Uint8Array.of(1, 2)], []);
    assert.equal(calls[0].url, 'https://chat.example/api/v1/devices/self/prekeys');
    assert.equal(calls[0].method, 'GET');
    assert.equal(calls[0].headers.Authorization, 'Bearer tok');
    assert.equal(calls[0].headers['X-CSRFToken'], undefined);
    assert.equal(calls[0].credentials, 'same-origin');
    assert.equal(calls[1].headers['X-CSRFToken'], 'abc=1');
    assert.equal(calls[1].headers['Content-Type'], 'application/json');
    assert.deepEqual(JSON.parse(calls[1].body), { one_time_prekeys_b64: ['AQI='], kem_prekeys_b64: [] });
    await api.login('alice', 'pw'); // no bearer on the session endpoints
    assert.equal(calls[2].headers.Authorization, undefined);
    assert.equal(calls[2].headers['X-CSRFToken'], 'abc=1');
  });

  test('errors keep the server code, fields and status; others are local codes', async () => {
    const body = { code: 'bad_signature', message: 'device.signed_prekey_b64: no', fields: { 'device.x': [] } };
    let api = new Api({ baseUrl: 'http://h', fetch: fakeFetch(400, body).fetch });
    await assert.rejects(api.accountKeys('bob'), (e) => {
      assert.ok(e instanceof ClientError);
      assert.deepEqual([e.code, e.message, e.status, e.fields], ['bad_signature', body.message, 400, body.fields]);
      return true;
    });
    api = new Api({ baseUrl: 'http://h', fetch: fakeFetch(429, { code: 'rate_limited', message: 'slow' }, { 'Retry-After': '7' }).fetch });
    await assert.rejects(api.accountKeys('bob'), (e) => e.code === 'rate_limited' && e.retryAfter === 7);
    api = new Api({ baseUrl: 'http://h', fetch: fakeFetch(418, { code: 'from_the_future', message: '?' }).fetch });
    await assert.rejects(api.accountKeys('bob'), (e) => e.code === 'bad_response' && e.status === 418);
    api = new Api({ baseUrl: 'http://h', fetch: fakeFetch(502, undefined).fetch });
    await assert.rejects(api.accountKeys('bob'), (e) => e.code === 'bad_response' && e.status === 502);
    api = new Api({ baseUrl: 'http://h', fetch: fakeFetch(200, { username: 'bob' }).fetch });
    await assert.rejects(api.accountKeys('bob'), (e) => e.code === 'bad_response');
    api = new Api({
      baseUrl: 'http://h',
      fetch: async () => {
        throw new TypeError('fetch failed');
      },
    });
    await assert.rejects(api.accountKeys('bob'), (e) => e.code === 'unreachable');
  });

  test('base64 both ways, strictly', () => {
    const data = Uint8Array.from({ length: 70_000 }, (_, i) => i * 7);
    assert.deepEqual(fromBase64(toBase64(data)), data);
    assert.equal(toBase64(Uint8Array.of(0xfb, 0xff)), '+/8=');
    for (const bad of ['-_8=', 'AQI', 'A=QI', 42]) assert.throws(() => fromBase64(bad), (e) => e.code === 'bad_response');
  });
});

describe('relay.js', () => {
  test('relay URLs and backoff with full jitter', () => {
    assert.equal(relayUrl('https://chat.example'), 'wss://chat.example/ws/v1/');
    assert.equal(relayUrl('http://127.0.0.1:8000/prefix/'), 'ws://127.0.0.1:8000/prefix/ws/v1/');
    assert.deepEqual(
      [0, 1, 2, 3, 10].map((n) => backoffDelay(n, 0.5, 200, 10_000)),
      [100, 200, 400, 800, 5_000],
    );
    assert.equal(backoffDelay(5, 0, 200, 10_000), 0);
    assert.equal(backoffDelay(1000, 0.999, 200, 10_000), 9_990);
  });

  /**
   * A fake WebSocket: `plan` says what each new socket does ('open', 'refuse').
   * @param {string[]} plan
   */
  function fakeSocket(plan) {
    return class FakeSocket {
      static made = /** @type {FakeSocket[]} */ ([]);
      constructor(url, protocols) {
        this.url = url;
        this.protocols = protocols;
        this.protocol = 'sealpost.v1';
        this.sent = /** @type {Uint8Array[]} */ ([]);
        this.onopen = this.onclose = this.onerror = this.onmessage = /** @type {any} */ (null);
        FakeSocket.made.push(this);
        const what = plan.shift() ?? 'open';
        setTimeout(() => (what === 'open' ? this.onopen?.() : this.onclose?.({ code: 1006 })), 1);
      }
      send(data) {
        this.sent.push(Uint8Array.from(data));
      }
      close() {}
      /** @param {import('../../../static/js/protocol/frames.js').Frame} frame */
      receive(frame) {
        this.onmessage?.({ data: encodeFrame(frame).buffer });
      }
      /** @param {number} code */
      drop(code) {
        this.onclose?.({ code });
      }
    };
  }

  test('a pending SEND is resent byte for byte after reconnecting, then answered', async () => {
    const Socket = fakeSocket(['open', 'refuse', 'refuse', 'open']);
    const draws = [];
    const relay = new Relay({
      url: 'ws://h/ws/v1/',
      token: 'T0KEN',
      onPush: async () => {},
      WebSocket: /** @type {any} */ (Socket),
      baseMs: 5,
      capMs: 20,
      random: () => (draws.push(1), 0.5),
    });
    const states = [];
    relay.addEventListener('state', (e) => states.push(/** @type {CustomEvent} */ (e).detail.state));
    await relay.start();
    assert.deepEqual(Socket.made[0].protocols, ['sealpost.v1', 'sealpost.token.T0KEN']);
    const frame = new Send({ requestId: 0, recipient: 'bob', messages: [new DeviceMessage(1, 9, Uint8Array.of(1, 2, 3))] });
    const answer = relay.request(frame);
    const first = Socket.made[0].sent[0];
    assert.equal(first[1], FrameType.SEND);
    Socket.made[0].drop(1006);
    await until(() => Socket.made.length === 4 && relay.state === 'online', 'the fourth socket');
    assert.equal(draws.length, 3, 'one jittered delay per attempt');
    assert.deepEqual(Socket.made[3].sent[0], first, 'the same bytes, request id included');
    const { requestId } = decodeFrame(first);
    Socket.made[3].receive(new SendOk({ requestId, serverTimeMs: 5 }));
    assert.equal((await answer).serverTimeMs, 5);
    assert.deepEqual(states, ['connecting', 'online', 'connecting', 'online']);
    relay.close();
    assert.equal(relay.state, 'offline');
    await assert.rejects(relay.request(frame), (e) => e.code === 'closed');
  });

  test('close code 4403 (revoked) is final', async () => {
    const Socket = fakeSocket(['open']);
    const relay = new Relay({ url: 'ws://h/', token: 't', onPush: async () => {}, WebSocket: /** @type {any} */ (Socket) });
    const failed = new Promise((resolve) => relay.addEventListener('failed', (e) => resolve(/** @type {CustomEvent} */ (e).detail.error)));
    try {
      await relay.start();
      await assert.rejects(
        relay.request(new Send({ requestId: 0, recipient: 'bob', messages: [] })),
        (e) => e instanceof ClientError && e.code === 'invalid_value',
      );
      const message = new DeviceMessage(1, 1, Uint8Array.of(1));
      const answer = relay.request(new Send({ requestId: 0, recipient: 'bob', messages: [message] }));
      Socket.made[0].drop(4403);
      assert.equal((await failed).code, 'unauthorized');
      await assert.rejects(answer, (e) => e.code === 'unauthorized');
      await sleep(50);
      assert.equal(Socket.made.length, 1, 'no reconnection');
      assert.equal(relay.state, 'offline');
    } finally {
      relay.close();
    }
  });

  test('the first connection failing rejects start() as unreachable', async () => {
    const Socket = fakeSocket(['refuse']);
    const relay = new Relay({ url: 'ws://h/', token: 't', onPush: async () => {}, WebSocket: /** @type {any} */ (Socket) });
    await assert.rejects(relay.start(), (e) => e instanceof ClientError && e.code === 'unreachable');
    assert.equal(relay.state, 'offline');
  });

  test('pushes go to onPush in order; PINGs are answered; no PONG drops the connection', async () => {
    const Socket = fakeSocket(['open', 'open']);
    const pushes = [];
    const relay = new Relay({
      url: 'ws://h/',
      token: 't',
      onPush: async (push) => {
        await sleep(5);
        pushes.push(push.constructor.name);
      },
      WebSocket: /** @type {any} */ (Socket),
      pingIntervalMs: 20,
      pongTimeoutMs: 30,
      baseMs: 1,
    });
    await relay.start();
    const { Deliver, QueueEmpty, Ping } = await import('../../../static/js/protocol/index.js');
    const socket = Socket.made[0];
    socket.receive(new Deliver({ seq: 1, sender: 'bob', senderDevice: 1, serverTimeMs: 1, payload: Uint8Array.of(1) }));
    socket.receive(new QueueEmpty());
    socket.receive(new Ping({ requestId: 77 }));
    assert.deepEqual(decodeFrame(socket.sent.at(-1)), new Pong({ requestId: 77 }));
    await until(() => pushes.length === 2, 'both pushes');
    assert.deepEqual(pushes, ['Deliver', 'QueueEmpty']);
    assert.equal(relay.backlogDelivered, true);
    // PINGs go out; unanswered, the connection is replaced.
    await until(() => Socket.made.length === 2, 'a new socket after the PONG timeout', 2_000);
    assert.ok(socket.sent.some((frame) => frame[1] === FrameType.PING));
    relay.close();
  });
});
