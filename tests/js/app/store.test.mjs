// The web client's IndexedDB store (static/js/app/store.js) on fake-indexeddb with Node's
// WebCrypto: round trips, secrets sealed at rest (the raw records are searched for the
// secret bytes), the at-rest key non-extractable, and all-or-nothing transactions.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { IDBFactory } from 'fake-indexeddb';

import {
  AccountIdentity,
  DeviceKeys,
  OneTimePreKeyPair,
  PreKeyMessage,
  SessionRecord,
  SignedPreKeyPair,
  KemPreKeyPair,
  utf8Encode,
} from '../../../static/js/protocol/index.js';
import { ClientError, DB_NAME, Store, req } from '../../../static/js/app/index.js';

/** Every Uint8Array and string inside a structured value (CryptoKeys excluded). */
function leaves(value, out = []) {
  if (value instanceof Uint8Array) out.push(value);
  else if (typeof value === 'string') out.push(utf8Encode(value));
  else if (value instanceof CryptoKey) return out;
  else if (value && typeof value === 'object') for (const v of Object.values(value)) leaves(v, out);
  return out;
}

/** @param {Uint8Array} haystack @param {Uint8Array} needle */
function contains(haystack, needle) {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** Every record of every object store, as IndexedDB holds it. */
async function rawRecords(factory, name = DB_NAME) {
  const db = await req(factory.open(name));
  const records = [];
  const t = db.transaction([...db.objectStoreNames], 'readonly');
  for (const storeName of db.objectStoreNames) {
    const store = t.objectStore(storeName);
    const [keys, values] = await Promise.all([req(store.getAllKeys()), req(store.getAll())]);
    keys.forEach((key, i) => records.push({ store: storeName, key, value: values[i] }));
  }
  db.close();
  return records;
}

/** What register() writes, made by hand so that the store is tested alone. */
async function fillStore(store) {
  const account = AccountIdentity.generate();
  const device = DeviceKeys.create(account, 1);
  const signed = SignedPreKeyPair.generate(device, 1);
  const oneTime = OneTimePreKeyPair.generate(7);
  const kem = KemPreKeyPair.generate(device, 3, false);
  const token = 'dG9rZW4tb2YtdGhlLWRldmljZS1mb3ItdGVzdHMtMDAwMDA';
  const rows = await Promise.all([
    store.sealPrekey('signed', 1, signed.privateKey, { createdAt: 1 }),
    store.sealPrekey('one_time', 7, oneTime.privateKey),
    store.sealPrekey('kem', 3, kem.seed, { lastResort: false, createdAt: 1 }),
  ]);
  const own = {
    accountSeed: await store.seal(account.seed, 'own:accountSeed'),
    accountKey: account.publicKey,
    signingSeed: await store.seal(device.signingSeed, 'own:signingSeed'),
    identityPrivate: await store.seal(device.identityPrivate, 'own:identityPrivate'),
    certificate: device.certificate.encode(),
  };
  // A session with another device, so that a real record is stored.
  const bob = DeviceKeys.create(AccountIdentity.generate(), 1);
  const bobSigned = SignedPreKeyPair.generate(bob, 1);
  const bobKem = KemPreKeyPair.generate(bob, 1, true);
  const { PreKeyBundle } = await import('../../../static/js/protocol/index.js');
  const bundle = new PreKeyBundle({
    accountIdentityKey: bob.accountKey,
    certificate: bob.certificate,
    signedPrekey: bobSigned.public,
    oneTimePrekey: null,
    kemPrekey: bobKem.public,
  });
  const record = SessionRecord.initiate(device, bundle);
  record.encrypt(utf8Encode('hello'));
  const session = await store.sealSession('bob', 1, record, 5);
  const sealedToken = await store.sealText(token, 'config:token');
  await store.write(['config', 'keys', 'prekeys', 'sessions'], async (t) => {
    await req(t.objectStore('keys').put(own, 'own'));
    for (const row of rows) await req(t.objectStore('prekeys').put(row));
    await req(t.objectStore('sessions').put(session));
    await req(t.objectStore('config').put('alice', 'username'));
    await req(t.objectStore('config').put(sealedToken, 'token'));
  });
  return { account, device, signed, oneTime, kem, token, record };
}

test('values round-trip through a reopened store', async () => {
  const factory = new IDBFactory();
  const first = await Store.open({ indexedDB: factory });
  const made = await fillStore(first);
  first.close();

  const store = await Store.open({ indexedDB: factory });
  const config = await store.config();
  assert.equal(config.username, 'alice');
  assert.equal(config.token, made.token);
  const device = await store.deviceKeys();
  assert.deepEqual(device.signingSeed, made.device.signingSeed);
  assert.deepEqual(device.identityPrivate, made.device.identityPrivate);
  assert.deepEqual(device.certificate.encode(), made.device.certificate.encode());
  assert.deepEqual(device.accountKey, made.account.publicKey);
  const record = await store.loadSession('bob', 1);
  assert.deepEqual(record.encode(), made.record.encode());
  assert.equal(await store.loadSession('bob', 2), null);

  // The PreKeyStore a PreKeyMessage gets: only the ids it names, unsealed.
  const lookup = await store.prekeysFor(
    /** @type {PreKeyMessage} */ ({ signedPrekeyId: 1, oneTimePrekeyId: 7, kemPrekeyId: 3 }),
  );
  assert.deepEqual(lookup.signedPrekey(1), made.signed.privateKey);
  assert.deepEqual(lookup.oneTimePrekey(7), made.oneTime.privateKey);
  assert.deepEqual(lookup.kemPrekey(3), [made.kem.seed, false]);
  assert.equal(lookup.oneTimePrekey(8), null);
  assert.equal(lookup.signedPrekey(2), null);
  store.close();
});

test('no secret is stored in the clear', async () => {
  const factory = new IDBFactory();
  const store = await Store.open({ indexedDB: factory });
  const made = await fillStore(store);
  const text = 'a message nobody may read from the disk';
  const sealedText = await store.sealText(text, 'message');
  await store.write(['messages'], (t) => req(t.objectStore('messages').add({ peer: 'bob', text: sealedText })));
  store.close();

  const secrets = {
    'account seed': made.account.seed,
    'device signing seed': made.device.signingSeed,
    'device identity private key': made.device.identityPrivate,
    'signed prekey': made.signed.privateKey,
    'one-time prekey': made.oneTime.privateKey,
    'KEM seed': made.kem.seed,
    'device token': utf8Encode(made.token),
    'session record': made.record.encode().subarray(0, 64),
    'message text': utf8Encode(text),
  };
  const records = await rawRecords(factory);
  assert.ok(records.length >= 8);
  for (const { store: name, key, value } of records) {
    for (const leaf of leaves(value)) {
      for (const [what, secret] of Object.entries(secrets)) {
        assert.ok(!contains(leaf, secret), `${what} in the clear in ${name} ${JSON.stringify(key)}`);
      }
    }
  }
  // Public values may stay plain (and do: they are what lookups need).
  const own = records.find((r) => r.store === 'keys' && r.key === 'own').value;
  assert.deepEqual(own.accountKey, made.account.publicKey);
});

test('the at-rest key is a non-extractable AES-GCM-256 CryptoKey, kept across opens', async () => {
  const factory = new IDBFactory();
  const store = await Store.open({ indexedDB: factory });
  const sealed = await store.seal(Uint8Array.of(1, 2, 3), 'test:x');
  store.close();
  const keyRecord = (await rawRecords(factory)).find((r) => r.store === 'keys' && r.key === 'atRest');
  const key = keyRecord.value;
  assert.ok(key instanceof CryptoKey);
  assert.equal(key.extractable, false);
  assert.equal(key.algorithm.name, 'AES-GCM');
  assert.equal(key.algorithm.length, 256);
  await assert.rejects(crypto.subtle.exportKey('raw', key));

  const again = await Store.open({ indexedDB: factory }); // another tab, or a reload
  assert.deepEqual(await again.unseal(sealed, 'test:x'), Uint8Array.of(1, 2, 3));
  again.close();
  const other = await Store.open({ indexedDB: new IDBFactory() }); // another browser profile
  await assert.rejects(other.unseal(sealed, 'test:x'), (e) => e instanceof ClientError && e.code === 'storage');
  other.close();
});

test('a sealed value opens only at its own place and only untampered', async () => {
  const store = await Store.open({ indexedDB: new IDBFactory() });
  const sealed = await store.seal(utf8Encode('secret'), 'session:bob:1');
  assert.equal(sealed.length, 12 + 6 + 16);
  const again = await store.seal(utf8Encode('secret'), 'session:bob:1');
  assert.notDeepEqual(again.subarray(0, 12), sealed.subarray(0, 12), 'a fresh IV per value');
  assert.deepEqual(await store.unseal(sealed, 'session:bob:1'), utf8Encode('secret'));
  const isStorage = (/** @type {any} */ e) => e instanceof ClientError && e.code === 'storage';
  await assert.rejects(store.unseal(sealed, 'session:bob:2'), isStorage);
  for (const index of [0, 12, sealed.length - 1]) {
    const tampered = sealed.slice();
    tampered[index] ^= 1;
    await assert.rejects(store.unseal(tampered, 'session:bob:1'), isStorage);
  }
  store.close();
});

test('a write transaction is all or nothing', async () => {
  const store = await Store.open({ indexedDB: new IDBFactory() });
  await assert.rejects(
    store.write(['config', 'identities'], async (t) => {
      await req(t.objectStore('config').put('x', 'username'));
      await req(t.objectStore('identities').put({ username: 'bob' }));
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.equal(await store.get('config', 'username'), undefined);
  assert.equal(await store.get('identities', 'bob'), undefined);
  // A failing request aborts the whole transaction too.
  await assert.rejects(
    store.write(['config', 'keys'], async (t) => {
      await req(t.objectStore('config').put('y', 'username'));
      await req(t.objectStore('keys').add('again', 'atRest')); // exists: ConstraintError
    }),
  );
  assert.equal(await store.get('config', 'username'), undefined);
  store.close();
});

test('key ids are reserved without repeats and wrap after 2**32 - 1', async () => {
  const store = await Store.open({ indexedDB: new IDBFactory() });
  assert.deepEqual(await store.reserveKeyIds('kem', 3), [1, 2, 3]);
  assert.deepEqual(await store.reserveKeyIds('kem', 2), [4, 5]);
  assert.deepEqual(await store.reserveKeyIds('one_time', 1), [1]);
  assert.deepEqual(await store.reserveKeyIds('kem', 0), []);
  await store.write(['config'], (t) => req(t.objectStore('config').put({ signed: 0xffff_fffe }, 'nextIds')));
  assert.deepEqual(await store.reserveKeyIds('signed', 3), [0xffff_fffe, 0xffff_ffff, 1]);
  store.close();
});

test('a version 1 database is upgraded in place (to 4): the new stores appear, nothing is lost', async () => {
  const indexedDB = new IDBFactory();
  const opening = indexedDB.open(DB_NAME, 1);
  opening.onupgradeneeded = () => {
    const db = opening.result;
    for (const name of ['config', 'keys']) db.createObjectStore(name);
    db.createObjectStore('prekeys', { keyPath: ['kind', 'keyId'] });
    db.createObjectStore('sessions', { keyPath: ['peer', 'deviceId'] });
    db.createObjectStore('identities', { keyPath: 'username' });
    db.createObjectStore('peerDevices', { keyPath: ['username', 'deviceId'] });
    const messages = db.createObjectStore('messages', { keyPath: 'id', autoIncrement: true });
    messages.createIndex('peer', 'peer');
    messages.createIndex('sentAt', ['peer', 'direction', 'sentAt']);
    messages.createIndex('useq', 'useq', { unique: true });
    db.createObjectStore('outbox', { keyPath: 'id', autoIncrement: true });
    db.createObjectStore('receipts', { keyPath: ['peer', 'kind'] });
  };
  const old = await req(opening);
  const t = old.transaction(['config'], 'readwrite');
  await req(t.objectStore('config').put('alice', 'username'));
  old.close();

  const store = await Store.open({ indexedDB });
  assert.deepEqual(
    ['deviceLists', 'historyChunks', 'historyTransfers', 'conversations', 'groups', 'senderKeys'].filter((name) => store.db.objectStoreNames.contains(name)),
    ['deviceLists', 'historyChunks', 'historyTransfers', 'conversations', 'groups', 'senderKeys'],
  );
  assert.equal(store.db.version, 4);
  // Version 3: disappearing messages are found by their expiry.
  assert.ok(store.db.transaction(['messages']).objectStore('messages').indexNames.contains('expiresAt'));
  assert.equal((await store.config()).username, 'alice');
  await store.write(['historyChunks'], (tx) => req(tx.objectStore('historyChunks').put({ transferId: 'ab', index: 0, total: 1 })));
  assert.equal((await store.getAll('historyChunks', { index: 'transferId', query: 'ab' })).length, 1);
  store.close();
});
