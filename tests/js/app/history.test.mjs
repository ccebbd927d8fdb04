// HISTORY chunks on the receiving device, without a server: reassembly in any order,
// duplicates and disagreeing chunks ignored, one import per linked device, records already
// in the history skipped, and where imported history shows in a conversation.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { IDBFactory } from 'fake-indexeddb';

import { HistoryChunk, HistoryRecord, randomBytes, splitHistory } from '../../../static/js/protocol/index.js';
import { WebClient, req } from '../../../static/js/app/index.js';

async function newClient() {
  const client = await WebClient.open({ baseUrl: 'http://127.0.0.1:9', indexedDB: new IDBFactory() });
  await client._setConfig({ username: 'alice', deviceId: 2, historyExpected: true });
  /** @type {any[]} */
  const events = [];
  for (const type of ['history-imported', 'history-progress']) {
    client.addEventListener(type, (event) => events.push([type, /** @type {CustomEvent} */ (event).detail]));
  }
  return { client, events };
}

/**
 * What _processDeliver does with a HISTORY chunk from our own device `device`.
 * @param {WebClient} client
 * @param {HistoryChunk} chunk
 */
async function feed(client, chunk, device = 1) {
  const c = /** @type {any} */ (client);
  const events = await c._exclusive(async () => {
    const history = await c._prepareHistory(chunk, device, Date.now());
    if (!history) return [];
    return c._store.write(['messages', 'config', 'historyChunks', 'historyTransfers'], (/** @type {IDBTransaction} */ t) =>
      c._takeHistoryChunk(t, history),
    );
  });
  for (const [type, detail] of events) c._emit(type, detail);
  return events;
}

/** @param {number} count */
function records(count) {
  return Array.from(
    { length: count },
    (_, i) => new HistoryRecord(i % 3 ? 'bob' : 'carol', i % 2 === 0, 1_700_000_000_000 + i, `message ${i} ` + 'x'.repeat(20_000)),
  );
}

test('chunks in any order, with duplicates, are imported once, in order', async () => {
  const { client, events } = await newClient();
  const all = records(12);
  const chunks = splitHistory(all, randomBytes(16), 5);
  assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
  const order = [chunks.at(-1), chunks[1], chunks[1], ...chunks.slice(2, -1).reverse(), chunks.at(-1)];
  for (const chunk of order) await feed(client, /** @type {HistoryChunk} */ (chunk));
  assert.deepEqual(events.filter(([type]) => type === 'history-imported'), []);
  assert.equal((await client._store.getAll('historyChunks')).length, chunks.length - 1);
  await feed(client, chunks[0]);
  assert.deepEqual(events.filter(([type]) => type === 'history-imported'), [['history-imported', { count: 12 }]]);
  assert.deepEqual(events.filter(([type]) => type === 'history-progress').at(-1), ['history-progress', { received: chunks.length, total: chunks.length }]);
  assert.equal((await client._store.getAll('historyChunks')).length, 0, 'chunks dropped once imported');
  const bob = await client.messages('bob');
  const expected = all.filter((r) => r.peer === 'bob');
  assert.deepEqual(
    bob.map((m) => [m.direction, m.text, m.sentAt, m.status, m.senderDevice]),
    expected.map((r) => [r.outgoing ? 'out' : 'in', r.text, r.sentAtMs, r.outgoing ? 'sent' : 'read', r.outgoing ? 1 : 0]),
  );
  // A late copy of a chunk, or a second transfer: nothing more (history is taken once).
  assert.deepEqual(await feed(client, chunks[2]), []);
  const again = splitHistory(records(2), randomBytes(16), 6);
  assert.deepEqual(await feed(client, again[0]), []);
  assert.equal((await client.messages('carol')).length, all.filter((r) => r.peer === 'carol').length);
  assert.equal(await client._store.get('config', 'historyExpected'), false);
  client.close();
});

test('a chunk whose total disagrees is dropped; records already here are skipped', async () => {
  const { client, events } = await newClient();
  const id = randomBytes(16);
  const known = new HistoryRecord('bob', false, 1_700_000_000_005, 'already here');
  // A message this device received itself, live, before the history came.
  await client._store.write(['messages'], (t) =>
    req(
      t.objectStore('messages').add({ kind: 'text', direction: 'in', peer: 'bob', senderDevice: 1, text: null, code: null, sentAt: 1, serverTime: 1, receivedAt: 1, status: 'received', seq: 1 }),
    ),
  );
  const sealed = await client._store.sealText(known.text, 'message');
  await client._store.write(['messages'], (t) =>
    req(
      t.objectStore('messages').add({ kind: 'text', direction: 'in', peer: 'bob', senderDevice: 1, text: sealed, code: null, sentAt: known.sentAtMs, serverTime: 2, receivedAt: 2, status: 'received', seq: 2 }),
    ),
  );
  const old = new HistoryRecord('bob', true, 1_600_000_000_000, 'the oldest');
  assert.deepEqual(await feed(client, new HistoryChunk(id, 0, 2, [old], 1)), [['history-progress', { received: 1, total: 2 }]]);
  assert.deepEqual(await feed(client, new HistoryChunk(id, 1, 3, [known], 1)), [], 'another total');
  await feed(client, new HistoryChunk(id, 1, 2, [known, old, new HistoryRecord('bob', true, 1_600_000_000_001, 'new')], 1));
  assert.deepEqual(events.at(-1), ['history-imported', { count: 2 }]);
  // Imported history comes first in the conversation: it is older than what came live.
  assert.deepEqual(
    (await client.messages('bob')).map((m) => m.text),
    ['the oldest', 'new', null, 'already here'],
  );
  client.close();
});

test('without history expected (not linked with history to follow), chunks are dropped', async () => {
  const { client, events } = await newClient();
  await client._setConfig({ historyExpected: false });
  const [chunk] = splitHistory(records(1), randomBytes(16), 1);
  assert.deepEqual(await feed(client, chunk), []);
  assert.deepEqual(events, []);
  assert.equal((await client._store.getAll('historyChunks')).length, 0);
  assert.deepEqual(await client.conversations(), []);
  client.close();
});

test('the conversation list: live messages first, then history-only conversations by their clock', async () => {
  const { client } = await newClient();
  const id = randomBytes(16);
  await feed(
    client,
    new HistoryChunk(
      id,
      0,
      1,
      [new HistoryRecord('carol', true, 1_600_000_000_000, 'old carol'), new HistoryRecord('dave', false, 1_650_000_000_000, 'newer dave')],
      1,
    ),
  );
  await client._store.write(['messages'], (t) =>
    req(
      t.objectStore('messages').add({ kind: 'undecryptable', direction: 'in', peer: 'erin', senderDevice: 1, text: null, code: 'truncated', sentAt: null, serverTime: 5, receivedAt: 5, status: 'received', seq: 9 }),
    ),
  );
  assert.deepEqual(
    (await client.conversations()).map((c) => c.peer),
    ['erin', 'dave', 'carol'],
  );
  client.close();
});
