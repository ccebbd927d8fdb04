// Shared helpers for the JavaScript protocol tests: paths, vector loading, the
// deterministic TestStream of scripts/make_vectors.py, the vector parties, a seeded PRNG.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  AccountIdentity,
  Attachment,
  DeviceKeys,
  Expiring,
  GroupUpdate,
  KemPreKeyPair,
  OneTimePreKeyPair,
  PreKeyBundle,
  ProtocolError,
  SenderKeyDistribution,
  SentContent,
  SessionRecord,
  SignedPreKeyPair,
  Text,
  TimerUpdate,
  Typing,
  concatBytes,
  errorSlug,
  fromHex,
  primitives,
  toHex,
  toUint64,
  utf8Encode,
} from '../../static/js/protocol/index.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const VECTORS = join(ROOT, 'protocol', 'vectors');
export const WYCHEPROOF = join(ROOT, '..', 'shared', 'vectors', 'wycheproof');

export const hex = toHex;
export const unhex = fromHex;
export const utf8 = utf8Encode;

/**
 * JSON.parse, except that integers too large for a double (2**63 - 1 in encoding.json) keep
 * their exact value, as a Uint64 (bigint above 2**53 - 1). Node 20's JSON.parse has no
 * access to the source text of a number, so such literals are quoted first.
 * @param {string} text
 */
export function parseJson(text) {
  const MARK = '__exact_integer__:';
  const quoted = text.replace(/([:[,]\s*)(\d{16,})(?=\s*[,\]}])/g, `$1"${MARK}$2"`);
  // Above 2**63 - 1 (a u64 such as a chunk index of attachments.json) a bigint stays one.
  const exact = (/** @type {bigint} */ big) => (big > (1n << 63n) - 1n ? big : toUint64(big));
  return JSON.parse(quoted, (_key, value) =>
    typeof value === 'string' && value.startsWith(MARK) ? exact(BigInt(value.slice(MARK.length))) : value,
  );
}

/** @param {string} name a file of protocol/vectors/ */
export function loadVector(name) {
  return parseJson(readFileSync(join(VECTORS, name), 'utf8'));
}

/**
 * Run a Python snippet in the repository (.venv/bin/python, the protocol package importable)
 * with `input` as JSON on stdin; its stdout is parsed as JSON (bigints travel as strings).
 * @param {string} code
 * @param {unknown} input
 */
export function python(code, input) {
  const run = spawnSync(join(ROOT, '.venv', 'bin', 'python'), ['-c', code], {
    cwd: ROOT,
    input: JSON.stringify(input, (_k, v) => (typeof v === 'bigint' ? `${v}` : v)),
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  });
  assert.equal(run.status, 0, run.stderr || run.error?.message);
  return parseJson(run.stdout);
}

/** @param {string} stem a Wycheproof file stem, e.g. "x25519" */
export function loadWycheproof(stem) {
  const path = join(WYCHEPROOF, `${stem}_test.json`);
  if (!existsSync(path)) {
    assert.fail(
      `Wycheproof vectors not found: expected ${path}. The tests read them from ` +
        `shared/vectors/wycheproof/ in the 'shared' checkout that must sit beside the ` +
        `repository (here: ${join(ROOT, '..', 'shared')}). Check it out there; these tests never skip.`,
    );
  }
  return JSON.parse(readFileSync(path, 'utf8'));
}

/**
 * Assert that `call` throws a ProtocolError whose slug is one of `slugs`; return it.
 * @param {() => unknown} call
 * @param {...string} slugs
 */
export function throwsSlug(call, ...slugs) {
  try {
    call();
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    assert.ok(slugs.includes(error.slug), `expected ${slugs.join(' or ')}, got ${error.message}`);
    return error;
  }
  assert.fail(`expected ProtocolError ${slugs.join(' or ')}, got no error`);
}

/**
 * Run `call`; return the ProtocolError it threw, or null. Anything else propagates.
 * @param {() => unknown} call
 */
export function errorOf(call) {
  try {
    call();
  } catch (error) {
    if (error instanceof ProtocolError) {
      assert.ok(errorSlug(error.code), `ProtocolError with an unknown code ${error.code}`);
      return error;
    }
    throw error;
  }
  return null;
}

// --- the deterministic randomness of scripts/make_vectors.py -----------------------------

/**
 * block_i = SHA-256(seed | u64be(i)), i = 0, 1, ...; the stream is their concatenation,
 * consumed in order. Callable as an rng: `stream(32)`.
 * @param {Uint8Array} seedBytes
 * @returns {((length: number) => Uint8Array) & {drawn: () => number}}
 */
export function testStream(seedBytes) {
  let index = 0;
  let buffer = new Uint8Array(0);
  let drawn = 0;
  const rng = (/** @type {number} */ length) => {
    while (buffer.length < length) {
      const counter = new Uint8Array(8);
      new DataView(counter.buffer).setBigUint64(0, BigInt(index));
      buffer = concatBytes(buffer, primitives.sha256(concatBytes(seedBytes, counter)));
      index += 1;
    }
    const out = buffer.slice(0, length);
    buffer = buffer.slice(length);
    drawn += length;
    return out;
  };
  return Object.assign(rng, { drawn: () => drawn });
}

/**
 * A fixed input derived from a readable label (make_vectors.seed).
 * @param {string} label
 * @param {number} [length]
 */
export function seed(label, length = 32) {
  return testStream(utf8(label))(length);
}

/**
 * Deterministic ML-KEM encapsulation: m is drawn from `stream` (make_vectors).
 * @param {(length: number) => Uint8Array} stream
 */
export function deterministicEncapsulate(stream) {
  return (/** @type {Uint8Array} */ publicKey) => primitives.mlkem768Encapsulate(publicKey, stream(32));
}

/** A device with recorded seeds for every key and an in-memory prekey store (make_vectors). */
export class VectorParty {
  /**
   * @param {string} name
   * @param {number} deviceId
   * @param {number} registrationId
   */
  constructor(name, deviceId, registrationId) {
    this.name = name;
    this.account = AccountIdentity.fromSeed(seed(`${name}/account`));
    this.device = DeviceKeys.create(this.account, deviceId, {
      rng: testStream(utf8(`${name}/device`)),
      registrationId,
    });
    this.signed = SignedPreKeyPair.generate(this.device, 1, { rng: testStream(utf8(`${name}/spk`)) });
    this.oneTime = OneTimePreKeyPair.generate(100, { rng: testStream(utf8(`${name}/opk`)) });
    this.kem = KemPreKeyPair.generate(this.device, 200, false, { rng: testStream(utf8(`${name}/kem`)) });
    this.lastResort = KemPreKeyPair.generate(this.device, 201, true, {
      rng: testStream(utf8(`${name}/kem-lr`)),
    });
    /** @type {Set<number>} */
    this.used = new Set();
  }

  bundle({ withOneTime = true, lastResort = false } = {}) {
    return new PreKeyBundle({
      accountIdentityKey: this.account.publicKey,
      certificate: this.device.certificate,
      signedPrekey: this.signed.public,
      oneTimePrekey: withOneTime ? this.oneTime.public : null,
      kemPrekey: (lastResort ? this.lastResort : this.kem).public,
    });
  }

  // PreKeyStore
  /** @param {number} keyId */
  signedPrekey(keyId) {
    return keyId === this.signed.public.keyId ? this.signed.privateKey : null;
  }

  /** @param {number} keyId */
  oneTimePrekey(keyId) {
    return keyId === this.oneTime.public.keyId && !this.used.has(keyId) ? this.oneTime.privateKey : null;
  }

  /**
   * @param {number} keyId
   * @returns {[Uint8Array, boolean] | null}
   */
  kemPrekey(keyId) {
    for (const pair of [this.kem, this.lastResort]) {
      if (keyId === pair.public.keyId && !this.used.has(keyId)) return [pair.seed, pair.public.lastResort];
    }
    return null;
  }
}

// --- seeded randomness for property tests ----------------------------------------------

/**
 * A small deterministic PRNG (xoshiro128**), so that a failing property test can be re-run
 * with the same inputs. Not for keys outside tests.
 * @param {number} seedValue
 */
export function seededRandom(seedValue) {
  // splitmix32 to spread the seed over the state
  let s = seedValue >>> 0;
  const split = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = split();
  let b = split();
  let c = split();
  let d = split();
  const next = () => {
    const result = Math.imul(((Math.imul(b, 5) << 7) | (Math.imul(b, 5) >>> 25)) >>> 0, 9) >>> 0;
    const t = (b << 9) >>> 0;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = ((d << 11) | (d >>> 21)) >>> 0;
    return result;
  };
  return {
    /** a uniform integer in [0, n) */
    int: (/** @type {number} */ n) => Math.floor((next() / 2 ** 32) * n),
    bool: () => (next() & 1) === 1,
    /** @param {number} length */
    bytes: (length) => {
      const out = new Uint8Array(length);
      for (let i = 0; i < length; i++) out[i] = next() & 0xff;
      return out;
    },
    /** @template T @param {readonly T[]} items @returns {T} */
    pick: (items) => items[Math.floor((next() / 2 ** 32) * items.length)],
  };
}

// --- parties for behaviour tests (tests/protocol/helpers.py) ----------------------------

/** A Map-backed PreKeyStore; `apply` deletes what a Decrypted reports as consumed. */
export class MemoryPreKeyStore {
  constructor() {
    /** @type {Map<number, Uint8Array>} */ this.signed = new Map();
    /** @type {Map<number, Uint8Array>} */ this.oneTime = new Map();
    /** @type {Map<number, [Uint8Array, boolean]>} */ this.kem = new Map();
  }

  /** @param {number} id */
  signedPrekey(id) {
    return this.signed.get(id) ?? null;
  }

  /** @param {number} id */
  oneTimePrekey(id) {
    return this.oneTime.get(id) ?? null;
  }

  /** @param {number} id */
  kemPrekey(id) {
    return this.kem.get(id) ?? null;
  }

  /** @param {{consumedOneTimePrekeyId: number | null, consumedKemPrekeyId: number | null}} result */
  apply(result) {
    if (result.consumedOneTimePrekeyId !== null) {
      assert.ok(this.oneTime.delete(result.consumedOneTimePrekeyId));
    }
    if (result.consumedKemPrekeyId !== null) {
      const entry = this.kem.get(result.consumedKemPrekeyId);
      assert.ok(entry && !entry[1], 'a last-resort KEM prekey was reported as consumed');
      this.kem.delete(result.consumedKemPrekeyId);
    }
  }

  copy() {
    const out = new MemoryPreKeyStore();
    for (const field of /** @type {const} */ (['signed', 'oneTime', 'kem'])) {
      for (const [k, v] of this[field]) /** @type {Map<number, any>} */ (out[field]).set(k, v);
    }
    return out;
  }
}

/**
 * One device of one account, with its prekeys and a seeded rng. `bundle()` hands out a
 * fresh one-time X25519 prekey and one-time KEM prekey each time, as the server would.
 */
export class TestParty {
  /**
   * @param {string} username
   * @param {{seed?: number, deviceId?: number, account?: AccountIdentity}} [options]
   */
  constructor(username, { seed = hashSeed(username), deviceId = 1, account } = {}) {
    const random = seededRandom(seed);
    this.username = username;
    this.rng = random.bytes;
    this.account = account ?? AccountIdentity.generate({ rng: this.rng });
    this.device = DeviceKeys.create(this.account, deviceId, { rng: this.rng });
    this.signed = SignedPreKeyPair.generate(this.device, 1, { rng: this.rng });
    this.lastResort = KemPreKeyPair.generate(this.device, 1, true, { rng: this.rng });
    this.store = new MemoryPreKeyStore();
    this.store.signed.set(1, this.signed.privateKey);
    this.store.kem.set(1, [this.lastResort.seed, true]);
    this.nextOneTimeId = 1;
    this.nextKemId = 2;
  }

  get accountKey() {
    return this.account.publicKey;
  }

  bundle({ oneTime = true, kemOneTime = true } = {}) {
    let opk = null;
    if (oneTime) {
      const pair = OneTimePreKeyPair.generate(this.nextOneTimeId++, { rng: this.rng });
      this.store.oneTime.set(pair.public.keyId, pair.privateKey);
      opk = pair.public;
    }
    let kem = this.lastResort;
    if (kemOneTime) {
      kem = KemPreKeyPair.generate(this.device, this.nextKemId++, false, { rng: this.rng });
      this.store.kem.set(kem.public.keyId, [kem.seed, false]);
    }
    return new PreKeyBundle({
      accountIdentityKey: this.accountKey,
      certificate: this.device.certificate,
      signedPrekey: this.signed.public,
      oneTimePrekey: opk,
      kemPrekey: kem.public,
    });
  }

  /**
   * @param {import('../../static/js/protocol/index.js').PreKeyBundle} bundle
   * @param {import('../../static/js/protocol/index.js').SessionRecord | null} [existing]
   */
  initiate(bundle, existing = null) {
    return SessionRecord.initiate(this.device, bundle, { existing, rng: this.rng });
  }

  /**
   * Decrypt into `record` and, on success, delete the consumed prekeys.
   * @param {import('../../static/js/protocol/index.js').SessionRecord} record
   * @param {Uint8Array} data
   * @param {Uint8Array | null} [trustedAccountKey]
   */
  decrypt(record, data, trustedAccountKey = null) {
    const result = record.decrypt(data, this.device, this.store, { trustedAccountKey, rng: this.rng });
    this.store.apply(result);
    return result;
  }
}

/** @param {string} text */
function hashSeed(text) {
  let h = 2166136261;
  for (const ch of utf8(text)) h = Math.imul(h ^ ch, 16777619) >>> 0;
  return h;
}

/**
 * @param {string} sender
 * @param {number} index
 */
export function plaintext(sender, index) {
  return utf8(`${sender}#${index}`);
}

/**
 * Alice initiates from Bob's bundle, Bob decrypts her first message and replies, Alice
 * decrypts the reply: both records are then past the prekey stage.
 * @param {TestParty} alice
 * @param {TestParty} bob
 */
export function startConversation(alice, bob, { oneTime = true, kemOneTime = true } = {}) {
  const aliceRecord = alice.initiate(bob.bundle({ oneTime, kemOneTime }));
  const bobRecord = new SessionRecord();
  assert.equal(hex(bob.decrypt(bobRecord, aliceRecord.encrypt(utf8('hello bob'))).plaintext), hex(utf8('hello bob')));
  assert.equal(hex(alice.decrypt(aliceRecord, bobRecord.encrypt(utf8('hello alice'))).plaintext), hex(utf8('hello alice')));
  return [aliceRecord, bobRecord];
}

/** @param {import('../../static/js/protocol/index.js').SessionRecord} record */
export function copyRecord(record) {
  return SessionRecord.decode(record.encode());
}

/**
 * `call` must throw a ProtocolError with one of `slugs`, and leave `record` unchanged.
 * @param {import('../../static/js/protocol/index.js').SessionRecord} record
 * @param {() => unknown} call
 * @param {...string} slugs
 */
export function assertRejected(record, call, ...slugs) {
  const before = hex(record.encode());
  const error = throwsSlug(call, ...slugs);
  assert.equal(hex(record.encode()), before, 'a failed decryption changed the record');
  return error;
}

/**
 * A content object from a content.json entry: Python's class name and its fields (bytes as
 * hex, an inner content as {type, fields}).
 * @param {string} type
 * @param {Record<string, any>} f
 * @returns {any}
 */
export function contentFromFields(type, f) {
  switch (type) {
    case 'Text':
      return new Text(f.body, f.sent_at_ms);
    case 'Typing':
      return new Typing(f.action, f.sent_at_ms);
    case 'SenderKeyDistribution':
      return new SenderKeyDistribution(unhex(f.group_id), f.key_id, f.iteration, unhex(f.chain_key), unhex(f.signing_key), f.sent_at_ms);
    case 'Attachment':
      return new Attachment({
        blobId: unhex(f.blob_id),
        key: unhex(f.key),
        size: f.size,
        digest: unhex(f.digest),
        flags: f.flags,
        contentType: f.content_type,
        fileName: f.file_name,
        durationMs: f.duration_ms,
        width: f.width,
        height: f.height,
        thumbnail: unhex(f.thumbnail),
        caption: f.caption,
        sentAtMs: f.sent_at_ms,
      });
    case 'GroupUpdate':
      return new GroupUpdate(unhex(f.group_id), f.action, f.name, f.timer_seconds, f.targets, f.sent_at_ms);
    case 'TimerUpdate':
      return new TimerUpdate(f.timer_seconds, f.sent_at_ms);
    case 'Expiring':
      return new Expiring(f.timer_seconds, contentFromFields(f.inner.type, f.inner.fields), f.sent_at_ms);
    case 'SentContent':
      return new SentContent(f.destination, contentFromFields(f.inner.type, f.inner.fields), f.sent_at_ms);
    default:
      throw new Error(`content.json names an unknown content class ${type}`);
  }
}
