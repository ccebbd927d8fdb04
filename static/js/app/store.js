// @ts-check
/**
 * The web client's local state: one IndexedDB database, "sealpost" (client/store.py's
 * SQLite file, for the browser).
 *
 * Object stores (keys in brackets):
 *
 *     config       [name]                 username, deviceId, token (sealed), nextIds,
 *                                         lastSentAt, receipts, loggedIn
 *     keys         [name]                 atRest (the CryptoKey), own (seeds sealed)
 *     prekeys      [kind, keyId]          private halves (sealed) of signed, one_time, kem
 *     sessions     [peer, deviceId]       ratchet session records (sealed)
 *     identities   [username]             account keys seen (TOFU), changed, verified
 *     peerDevices  [username, deviceId]   device certificates
 *     messages     [id] auto              history; text sealed; indexes peer, sentAt, useq
 *     outbox       [id] auto              SENDs the server has not answered yet
 *     receipts     [peer, kind]           receipts waiting to be sent
 *     deviceLists  [username]             the newest signed device list seen per account
 *                                         (with the account key it was checked against),
 *                                         and the devices it refused
 *     historyChunks [transferId, index]   HISTORY chunks of a transfer still incomplete
 *                                         (records sealed)
 *     historyTransfers [transferId]       transfers already imported (later copies dropped)
 *     conversations [peer]                the disappearing-messages timer per conversation
 *                                         (timerSeconds, and the sent_at of the TIMER that
 *                                         set it: an older one changes nothing)
 *
 *     groups       [id]                   a group this device knows of (id: 32 hex digits):
 *                                         name, timer, members, admin, member; the roster our
 *                                         sender key was reconciled with and its digest; our
 *                                         sending chain (sealed) and the devices holding it
 *     senderKeys   [group, sender, deviceId]  SenderKeyRecords received (sealed)
 *
 * Version 4 added groups and senderKeys (docs/protocol.md §17); a group message's row has
 * peer `group:<id>` and `sender`.
 * Version 3 added conversations and the messages index expiresAt (disappearing messages:
 * rows of kind attachment hold their pointer sealed, `timerSeconds` and, once the clock
 * runs, `expiresAt`); config gained typing.
 * Version 2 added deviceLists, historyChunks and historyTransfers (several devices per
 * account); config gained historyExpected.
 * At rest. The first open generates a non-extractable AES-GCM-256 CryptoKey and stores the
 * CryptoKey object itself (structured clone keeps it non-extractable: script can use it,
 * never read it). Every secret value (seeds, private keys, session records, the device
 * token, message text, outbox plaintext) is sealed with it: a fresh 12-byte IV, then the
 * ciphertext, with a label naming the value's place (store and key; for message texts and
 * outbox plaintexts, just the store) as associated data, so that a sealed value copied
 * into another place does not open. Public keys and metadata stay plain.
 *
 * Transactions. IndexedDB commits a transaction as soon as it has no request pending at
 * the end of a task, so awaiting anything but an IndexedDB request inside one (WebCrypto,
 * a fetch, a timer) commits it early. Callers therefore unseal and compute first, seal
 * second, and write last, in one `write()` whose callback awaits only IndexedDB requests.
 */

import {
  DeviceCertificate,
  DeviceKeys,
  PreKeyMessage,
  SessionRecord,
  utf8Decode,
  utf8Encode,
} from '../protocol/index.js';
import { ClientError, LocalCode } from './errors.js';

export const DB_NAME = 'sealpost';
export const DB_VERSION = 4;

/** @typedef {'signed' | 'one_time' | 'kem'} KeyKind */
/** @typedef {import('../protocol/session.js').PreKeyStore} PreKeyStore */

/**
 * @template T
 * @param {IDBRequest<T>} request
 * @returns {Promise<T>}
 */
export function req(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

export class Store {
  /**
   * @param {IDBDatabase} db
   * @param {CryptoKey} key
   * @param {Crypto} crypto
   */
  constructor(db, key, crypto) {
    this.db = db;
    this._key = key;
    this._crypto = crypto;
  }

  /**
   * Open (creating or upgrading) the database, and load or create the at-rest key.
   * @param {{indexedDB?: IDBFactory, name?: string, crypto?: Crypto}} [options]
   */
  static async open({ indexedDB = globalThis.indexedDB, name = DB_NAME, crypto = globalThis.crypto } = {}) {
    if (!indexedDB || !crypto?.subtle) {
      throw new ClientError(LocalCode.STORAGE, 'this browser has no IndexedDB or WebCrypto');
    }
    const opening = indexedDB.open(name, DB_VERSION);
    opening.onupgradeneeded = (event) =>
      upgrade(opening.result, event.oldVersion, /** @type {IDBTransaction} */ (opening.transaction));
    let db;
    try {
      db = await req(opening);
    } catch (error) {
      // E.g. storage disabled (some private windows), or a newer schema from a later version.
      throw new ClientError(LocalCode.STORAGE, `cannot open the ${name} database: ${error}`);
    }
    db.onversionchange = () => db.close(); // a newer tab upgrades; this one steps aside
    const store = new Store(db, /** @type {any} */ (null), crypto);
    let key = await store.get('keys', 'atRest');
    if (!key) {
      const fresh = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, [
        'encrypt',
        'decrypt',
      ]);
      // Another tab may have won the race: keep whichever key was stored first.
      key = await store.write(['keys'], async (t) => {
        const keys = t.objectStore('keys');
        const existing = await req(keys.get('atRest'));
        if (existing) return existing;
        await req(keys.add(fresh, 'atRest'));
        return fresh;
      });
    }
    store._key = key;
    return store;
  }

  close() {
    this.db.close();
  }

  // --- sealing ----------------------------------------------------------------------

  /**
   * @param {Uint8Array} data
   * @param {string} label where the value lives, bound in as associated data
   */
  async seal(data, label) {
    const iv = this._crypto.getRandomValues(new Uint8Array(12));
    const sealed = await this._crypto.subtle.encrypt(
      { name: 'AES-GCM', iv, additionalData: utf8Encode(label) },
      this._key,
      /** @type {Uint8Array<ArrayBuffer>} */ (data),
    );
    const out = new Uint8Array(12 + sealed.byteLength);
    out.set(iv);
    out.set(new Uint8Array(sealed), 12);
    return out;
  }

  /**
   * @param {Uint8Array} sealed
   * @param {string} label
   */
  async unseal(sealed, label) {
    try {
      const plain = await this._crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: sealed.slice(0, 12), additionalData: utf8Encode(label) },
        this._key,
        sealed.slice(12),
      );
      return new Uint8Array(plain);
    } catch {
      throw new ClientError(LocalCode.STORAGE, `the stored ${label.split(':')[0]} does not decrypt`);
    }
  }

  /**
   * @param {string} text
   * @param {string} label
   */
  async sealText(text, label) {
    return this.seal(utf8Encode(text), label);
  }

  /**
   * @param {Uint8Array} sealed
   * @param {string} label
   */
  async unsealText(sealed, label) {
    return utf8Decode(await this.unseal(sealed, label));
  }

  // --- transactions -----------------------------------------------------------------

  /**
   * Run `fn` in one transaction and resolve with its result once the transaction has
   * committed. `fn` may await IndexedDB requests (`req`) only; if it throws, nothing of it
   * is written.
   * @template T
   * @param {string[]} names
   * @param {(t: IDBTransaction) => Promise<T>} fn
   * @param {IDBTransactionMode} [mode]
   * @returns {Promise<T>}
   */
  async write(names, fn, mode = 'readwrite') {
    // 'strict': an envelope is acknowledged right after this commit; it must be on disk.
    const t = this.db.transaction(names, mode, mode === 'readwrite' ? { durability: 'strict' } : {});
    const done = new Promise((resolve, reject) => {
      t.oncomplete = resolve;
      t.onabort = () => reject(t.error ?? new ClientError(LocalCode.STORAGE, 'transaction aborted'));
    });
    done.catch(() => {}); // observed below, or superseded by fn's own error
    let result;
    try {
      result = await fn(t);
    } catch (error) {
      try {
        t.abort();
      } catch {
        // already finished
      }
      throw error;
    }
    await done;
    return result;
  }

  /**
   * @template T
   * @param {string[]} names
   * @param {(t: IDBTransaction) => Promise<T>} fn
   */
  read(names, fn) {
    return this.write(names, fn, 'readonly');
  }

  /**
   * @param {string} name
   * @param {IDBValidKey} key
   * @returns {Promise<any>}
   */
  get(name, key) {
    return this.read([name], (t) => req(t.objectStore(name).get(key)));
  }

  /**
   * @param {string} name
   * @param {{index?: string, query?: IDBKeyRange | IDBValidKey}} [options]
   * @returns {Promise<any[]>}
   */
  getAll(name, { index, query } = {}) {
    return this.read([name], (t) => {
      const source = index ? t.objectStore(name).index(index) : t.objectStore(name);
      return req(source.getAll(query));
    });
  }

  // --- configuration and own keys ---------------------------------------------------

  /** Everything in `config`, the token unsealed. */
  async config() {
    const [names, values] = await this.read(['config'], (t) => {
      const config = t.objectStore('config');
      return Promise.all([req(config.getAllKeys()), req(config.getAll())]);
    });
    /** @type {Record<string, any>} */
    const config = Object.fromEntries(names.map((name, i) => [String(name), values[i]]));
    if (config.token) config.token = await this.unsealText(config.token, 'config:token');
    return config;
  }

  /** This device's keys, or null before registration. */
  async deviceKeys() {
    const own = await this.get('keys', 'own');
    if (!own) return null;
    const [signingSeed, identityPrivate] = await Promise.all([
      this.unseal(own.signingSeed, 'own:signingSeed'),
      this.unseal(own.identityPrivate, 'own:identityPrivate'),
    ]);
    return new DeviceKeys(signingSeed, identityPrivate, DeviceCertificate.decode(own.certificate), own.accountKey);
  }

  /**
   * Reserve `count` fresh key ids of one kind (1..2**32 - 1, then wrapping), as
   * client/store.py next_key_ids.
   * @param {KeyKind} kind
   * @param {number} count
   */
  reserveKeyIds(kind, count) {
    return this.write(['config'], async (t) => {
      const config = t.objectStore('config');
      const next = { signed: 1, one_time: 1, kem: 1, ...(await req(config.get('nextIds'))) };
      const first = next[kind];
      const ids = Array.from({ length: count }, (_, i) => ((first - 1 + i) % 0xffff_ffff) + 1);
      next[kind] = ids.length ? (ids[ids.length - 1] % 0xffff_ffff) + 1 : first;
      await req(config.put(next, 'nextIds'));
      return ids;
    });
  }

  // --- prekeys ----------------------------------------------------------------------

  /**
   * A prekey row, its secret (private key or KEM seed) sealed.
   * @param {KeyKind} kind
   * @param {number} keyId
   * @param {Uint8Array} secret
   * @param {{public?: Uint8Array, lastResort?: boolean, createdAt?: number}} [extra]
   */
  async sealPrekey(kind, keyId, secret, extra = {}) {
    return { kind, keyId, secret: await this.seal(secret, `prekey:${kind}:${keyId}`), retiredAt: null, ...extra };
  }

  /**
   * The private prekeys a PreKeyMessage names, unsealed, as the synchronous PreKeyStore
   * that SessionRecord.decrypt consults.
   * @param {PreKeyMessage} message
   * @returns {Promise<PreKeyStore>}
   */
  async prekeysFor(message) {
    /** @type {Map<string, any>} */
    const found = new Map();
    /** @type {[KeyKind, number | null][]} */
    const wanted = [
      ['signed', message.signedPrekeyId],
      ['one_time', message.oneTimePrekeyId],
      ['kem', message.kemPrekeyId],
    ];
    await Promise.all(
      wanted.map(async ([kind, keyId]) => {
        if (keyId === null) return;
        const row = await this.get('prekeys', [kind, keyId]);
        if (row) found.set(kind, [await this.unseal(row.secret, `prekey:${kind}:${keyId}`), row.lastResort]);
      }),
    );
    /** @param {KeyKind} kind @param {number} keyId @param {number | null} asked */
    const lookup = (kind, keyId, asked) => (keyId === asked ? found.get(kind) ?? null : null);
    return {
      signedPrekey: (id) => lookup('signed', id, message.signedPrekeyId)?.[0] ?? null,
      oneTimePrekey: (id) => lookup('one_time', id, message.oneTimePrekeyId)?.[0] ?? null,
      kemPrekey: (id) => {
        const row = lookup('kem', id, message.kemPrekeyId);
        return row ? [row[0], Boolean(row[1])] : null;
      },
    };
  }

  // --- sessions ---------------------------------------------------------------------

  /**
   * @param {string} peer
   * @param {number} deviceId
   */
  async loadSession(peer, deviceId) {
    const row = await this.get('sessions', [peer, deviceId]);
    if (!row) return null;
    return SessionRecord.decode(await this.unseal(row.record, `session:${peer}:${deviceId}`));
  }

  /**
   * The `sessions` row for a record, sealed (to be put in a write transaction).
   * @param {string} peer
   * @param {number} deviceId
   * @param {SessionRecord} record
   * @param {number} now
   */
  async sealSession(peer, deviceId, record, now) {
    const sealed = await this.seal(record.encode(), `session:${peer}:${deviceId}`);
    return { peer, deviceId, record: sealed, updatedAt: now };
  }
}

/**
 * @param {IDBDatabase} db
 * @param {number} from the version on disk (0: a new database)
 * @param {IDBTransaction} t the upgrade's transaction
 */
function upgrade(db, from, t) {
  if (from < 1) createVersion1(db);
  if (from < 2) {
    db.createObjectStore('deviceLists', { keyPath: 'username' });
    const chunks = db.createObjectStore('historyChunks', { keyPath: ['transferId', 'index'] });
    chunks.createIndex('transferId', 'transferId');
    db.createObjectStore('historyTransfers', { keyPath: 'transferId' });
  }
  if (from < 3) {
    db.createObjectStore('conversations', { keyPath: 'peer' });
    t.objectStore('messages').createIndex('expiresAt', 'expiresAt'); // rows without one are not in it
  }
  if (from < 4) {
    db.createObjectStore('groups', { keyPath: 'id' });
    db.createObjectStore('senderKeys', { keyPath: ['group', 'sender', 'deviceId'] });
  }
}

/** @param {IDBDatabase} db */
function createVersion1(db) {
  db.createObjectStore('config');
  db.createObjectStore('keys');
  db.createObjectStore('prekeys', { keyPath: ['kind', 'keyId'] });
  db.createObjectStore('sessions', { keyPath: ['peer', 'deviceId'] });
  db.createObjectStore('identities', { keyPath: 'username' });
  db.createObjectStore('peerDevices', { keyPath: ['username', 'deviceId'] });
  const messages = db.createObjectStore('messages', { keyPath: 'id', autoIncrement: true });
  messages.createIndex('peer', 'peer'); // by peer, then by id
  // Receipts name our messages by their sent_at; unique per device (see client.js).
  messages.createIndex('sentAt', ['peer', 'direction', 'sentAt']);
  // An envelope that failed to decrypt is listed once, however often it is redelivered.
  messages.createIndex('useq', 'useq', { unique: true });
  db.createObjectStore('outbox', { keyPath: 'id', autoIncrement: true });
  db.createObjectStore('receipts', { keyPath: ['peer', 'kind'] });
}
