// @ts-check
/**
 * `WebClient`: this browser's device of an account, put together from the IndexedDB store,
 * the REST API and the relay. It keeps the rules of the Python reference client
 * (client/core.py), so that the two interoperate and fail the same way:
 *
 * - Nothing is acknowledged before it is stored. A DELIVER is decrypted; the new session
 *   state, the message and the deletion of consumed prekeys commit in one transaction;
 *   only then does the ACK go out. A failure in between leaves the envelope on the server
 *   and nothing written here, so the next delivery decrypts it afresh.
 * - Nothing is encrypted twice. A send is encrypted once per device and the ciphertexts go
 *   into the outbox in the same transaction as the advanced sessions; a resend reuses them.
 *   Only devices the server reports missing or stale get a new encryption (at most 3
 *   rounds of DEVICE_MISMATCH).
 * - Sessions are read, advanced and written by one operation at a time: every such
 *   operation holds the state lock (a Web Lock shared by the tabs of this origin where the
 *   browser has them), and network calls happen before it is taken.
 * - Trust on first use, then loudly: a changed account key is stored, flagged `changed`,
 *   and reported ('identity-changed'); receiving goes on, sending to it fails with
 *   `untrusted_identity` until trust().
 * - Events reach the page only after their transaction has committed.
 *
 * Several devices per account (docs/api.md). Every device-list fetch is checked against the
 * account's signed device list (protocol/devicelist.py check_devices), whose newest version
 * per account is stored and never goes back; only devices it names, with the certificate
 * shown, are encrypted to, and the others are reported ('device-refused'). A text also goes
 * to this account's other devices as a SENT transcript, which they store as sent by us. A
 * newly linked device takes HISTORY chunks from the device that approved it (reassembled in
 * any order, duplicates ignored, imported once: 'history-imported').
 *
 * Receipts (protocol/content.py RECEIPT). A message is named by its sender and sent_at, so
 * every content this device sends gets a sent_at above the previous one (unique and
 * increasing). Received texts queue a DELIVERED receipt (in the transaction that stores
 * them), markRead() a READ receipt; the queue is sent per sender, up to 100 messages per
 * receipt, once the backlog is in. A receipt moves our message's status forwards only:
 * pending → sent → delivered → read. With receipts off, none are sent (others' still count).
 *
 * Files, typing, disappearing messages (protocol.md §17.4–17.5, as client/core.py). A file
 * is encrypted while it is read and uploaded before anything is stored (transfer.js); its
 * pointer then goes like a text (ATTACHMENT; SENT_CONTENT to our other devices) and is
 * stored sealed, the key never leaving this module. Downloads are checked against the
 * pointer before the page gets the file. Typing indicators are EPHEMERAL sends to the
 * devices we have sessions with, never stored, never retried. A conversation's timer is
 * set by a TIMER (the later one wins); while it is on, texts and files go as EXPIRING in
 * SENDs with EXPIRES, and each side deletes them on its own clock: the sender from
 * sending, the receiver from showing (markRead); a timer purges them ('expired').
 */

import {
  ADDRESS_BYTES,
  AccountIdentity,
  Attachment,
  AttachmentFlags,
  Deliver,
  DeviceCertificate,
  DeviceKeys,
  DeviceMessage,
  DeviceMismatch,
  ErrorCode,
  ErrorFrame,
  Expiring,
  GroupAction,
  GroupSend,
  GroupUpdate,
  HISTORY_TRANSFER_ID_BYTES,
  HistoryChunk,
  HistoryRecord,
  KemPreKeyPair,
  LinkCode,
  MAX_PREKEYS_PER_UPLOAD,
  MAX_GROUP_NAME_BYTES,
  MAX_RECEIPT_ITEMS,
  MAX_TEXT_BYTES,
  MAX_TTL_SECONDS,
  MessageKind,
  Notice,
  NoticeKind,
  OneTimePreKeyPair,
  PreKeyBundle,
  PreKeyMessage,
  ProtocolError,
  ProvisionMessage,
  Receipt,
  ReceiptKind,
  RosterEntry,
  Send,
  SendFlags,
  SendOk,
  SenderKeyDistribution,
  SenderKeyMessage,
  SenderKeyRecord,
  SenderKeyState,
  SentContent,
  SentTranscript,
  SessionRecord,
  SignedDeviceList,
  SignedPreKeyPair,
  Text,
  TimerUpdate,
  Typing,
  TypingAction,
  base64UrlDecode,
  bytesEqual,
  checkDevices,
  constantTimeEqual,
  decodeContent,
  encodeContent,
  encodeHistoryRecords,
  errorSlug,
  normalizeUsername,
  openSealed,
  parseGroupId,
  peekKind,
  primitives,
  randomBytes,
  rosterDigest,
  safetyNumber,
  seal,
  splitHistory,
  toHex,
  utf8Encode,
} from '../protocol/index.js';
import { Api } from './api.js';
import { ClientError, LocalCode, asClientError } from './errors.js';
import { Relay, relayUrl } from './relay.js';
import { Store, req } from './store.js';
import { blobIdHex, downloadFile, uploadFile } from './transfer.js';

/** @import { Push } from './relay.js' */

// Groups (group-client.js) are loaded on first use; this is what they are handed.
const GROUP_DEPS = {
  Attachment, ErrorCode, ErrorFrame, Expiring, GroupAction, GroupSend, GroupUpdate, MAX_GROUP_NAME_BYTES,
  MAX_TEXT_BYTES, ProtocolError, RosterEntry, SendFlags, SendOk, SenderKeyDistribution, SenderKeyMessage,
  SenderKeyRecord, SenderKeyState, Text, bytesEqual, decodeContent, encodeContent, errorSlug, normalizeUsername,
  parseGroupId, rosterDigest, toHex, utf8Encode, ClientError, LocalCode, asClientError, req,
}; // prettier-ignore
const GROUP_PEER = 'group:'; // a group's conversation: peer group:<id>
const GROUP_METHODS = /** @type {const} */ (['list', 'get', 'fetch', 'create', 'add', 'remove', 'leave', 'rename', 'sendText']);
/** @typedef {Pick<import('./group-client.js').Groups, typeof GROUP_METHODS[number]>} GroupsApi */

/** @param {string} peer */
const isGroupPeer = (peer) => typeof peer === 'string' && peer.startsWith(GROUP_PEER);

/**
 * `group:<id>` in its one spelling.
 * @param {string} peer
 */
function groupPeer(peer) {
  try {
    return GROUP_PEER + toHex(parseGroupId(peer.slice(GROUP_PEER.length).trim()));
  } catch (error) {
    throw asClientError(error);
  }
}

export const DEVICE_ID = 1; // sign-up creates device 1; linking gives the lowest id unused
export const LINK_TIMEOUT_MS = 10 * 60 * 1000; // a link code, and a link token, last 10 minutes
export const DEFAULT_HISTORY_BYTES = 1024 * 1024; // history sent to a newly linked device
const PROVISIONING_WAIT_S = 25; // one long poll for the sealed provisioning message
const LINK_POLL_MS = 1500; // how often the approving device looks for the new one
const PREKEY_BATCH = MAX_PREKEYS_PER_UPLOAD; // 100 of each kind at sign-up and per top-up
const MAX_MISMATCH_ROUNDS = 3;
const WEEK_MS = 7 * 24 * 3600 * 1000; // signed prekey age before rotation; grace of a retired one
const KEYGEN_BATCH = 10; // prekeys generated between two yields to the event loop
const RANK = { pending: 0, failed: 0, sent: 1, delivered: 2, read: 3 };
const NO_PREKEYS = { signedPrekey: () => null, oneTimePrekey: () => null, kemPrekey: () => null };
const SENDING_STORES = ['config', 'messages', 'outbox', 'sessions', 'peerDevices', 'receipts', 'conversations'];
const TYPING_TIMEOUT_MS = 10_000; // a typing indicator the server has not taken by then is moot
const KINDS = [ReceiptKind.DELIVERED, ReceiptKind.READ];

/**
 * What the page sees of an attachment (never its key): `blobId` in hex names it for
 * download(); `thumbnail` is the sender's small JPEG (may be empty).
 * @typedef {{blobId: string, contentType: string, fileName: string, size: number, voice: boolean,
 *   durationMs: number, width: number, height: number, thumbnail: Uint8Array, caption: string}} AttachmentInfo
 */
/**
 * A message as the page sees it. `id` is a string; `sentAt` the sender's clock (for an
 * undecryptable one, the server's); `code` the reason a message could not be decrypted.
 * Kind 'attachment' has `attachment`; kind 'timer' (the notice "X set disappearing
 * messages to T") has `timerSeconds` (0: off). A disappearing message has `timerSeconds`
 * and, once its clock runs (sent; or shown, for one received), `expiresAt` (ms). In a group
 * conversation (`peer` is `group:<id>`, groups.js) `sender` names who wrote it, and kind
 * 'group' is a membership or name change ("alice added carol") in `text`.
 * @typedef {{id: string, peer: string, direction: 'in' | 'out',
 *   kind: 'text' | 'undecryptable' | 'attachment' | 'timer' | 'group',
 *   text: string | null, sentAt: number, status: string, senderDevice: number, sender?: string,
 *   serverTime: number | null, code?: string, attachment?: AttachmentInfo,
 *   timerSeconds?: number, expiresAt?: number}} Message
 */
/** @typedef {{username: string, certificates: Map<number, DeviceCertificate>, bundles: Map<number, PreKeyBundle>}} Target */
/** @typedef {{id?: number, messageId: number | null, recipient: string, primary: boolean, content: Uint8Array, payloads: {deviceId: number, registrationId: number, payload: Uint8Array}[], createdAt: number, ttlSeconds?: number | null}} OutboxEntry */
/**
 * An account's devices as the server shows them, checked against its signed list:
 * `accepted` by id, `certificates` the accepted ones to encrypt to (our own device left
 * out), `refused` device ids with the reason.
 * @typedef {{deviceList: SignedDeviceList, accepted: Map<number, DeviceCertificate>,
 *   certificates: Map<number, DeviceCertificate>, refused: Map<number, string>}} CheckedDevices
 */
/**
 * What a new device shows while it waits to be linked.
 * @typedef {{text: string, fingerprint: string, address: string, expiresAt: number}} LinkOffer
 */

/** @param {unknown} value */
const num = (value) => (value === null || value === undefined ? null : Number(value));

/** @param {string} name */
function normalize(name) {
  try {
    return normalizeUsername(name);
  } catch (error) {
    throw asClientError(error);
  }
}

/** @param {unknown} error */
const refused = (error) => error instanceof ClientError && error.status !== null && error.status >= 400 && error.status < 500;

/**
 * Whether receipts that failed with `error` stay owed (it may pass) rather than being
 * dropped (the server refused for good: an account or device that is gone).
 * @param {unknown} error
 */
function receiptsMayWait(error) {
  const code = error instanceof ClientError ? error.code : '';
  if (['rate_limited', 'server_busy', 'queue_full'].includes(code)) return true;
  if (['unknown_account', 'unknown_device'].includes(code)) return false;
  return !refused(error);
}

/** @param {number} ms */
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The SEND flags of a message sent under a disappearing timer: EXPIRES with the timer as
 * ttl_seconds, so that the relay drops its copy by then, delivered or not.
 * @param {number | null | undefined} ttlSeconds
 */
const sendFlags = (ttlSeconds) => (ttlSeconds ? { flags: SendFlags.EXPIRES, ttlSeconds } : {});

/**
 * @param {any} row a `messages` row
 * @param {string | null} text
 * @param {Attachment | null} [pointer] a kind 'attachment' row's pointer, unsealed
 * @returns {Message}
 */
function publicMessage(row, text, pointer = null) {
  /** @type {Message} */
  const message = {
    id: String(row.id),
    peer: row.peer,
    direction: row.direction,
    kind: row.kind,
    text,
    sentAt: /** @type {number} */ (num(row.sentAt ?? row.serverTime)),
    status: row.status,
    senderDevice: row.senderDevice,
    serverTime: num(row.serverTime),
  };
  if (row.sender) message.sender = row.sender; // a group message: peer is group:<id>
  if (row.code) message.code = row.code;
  if (row.timerSeconds !== undefined && row.timerSeconds !== null) message.timerSeconds = row.timerSeconds;
  if (typeof row.expiresAt === 'number') message.expiresAt = row.expiresAt;
  if (pointer) {
    message.attachment = {
      blobId: blobIdHex(pointer.blobId),
      contentType: pointer.contentType,
      fileName: pointer.fileName,
      size: pointer.size,
      voice: pointer.voice,
      durationMs: Number(pointer.durationMs),
      width: Number(pointer.width),
      height: Number(pointer.height),
      thumbnail: pointer.thumbnail,
      caption: pointer.caption,
    };
  }
  return message;
}

/**
 * Take the EXPIRING layer off, also inside a SENT_CONTENT (client/disappearing.py unwrap):
 * the content to process as if it had none, and its timer (0: not a disappearing message).
 * A SENT_CONTENT of an expiring text becomes the SENT transcript of that text.
 * @param {import('../protocol/content.js').Content} content
 * @returns {[import('../protocol/content.js').Content, number]}
 */
function unwrapExpiring(content) {
  if (content instanceof Expiring) return [content.inner, content.timerSeconds];
  if (content instanceof SentContent && content.inner instanceof Expiring) {
    const { inner, timerSeconds } = content.inner;
    if (inner instanceof Text) return [new SentTranscript(content.destination, inner.body, content.sentAtMs), timerSeconds];
    return [new SentContent(content.destination, inner, content.sentAtMs), timerSeconds];
  }
  return [content, 0];
}

/**
 * An ATTACHMENT with another sent_at (the pointer is built before its message is).
 * @param {Attachment} a
 * @param {import('../protocol/encoding.js').Uint64} sentAtMs
 */
function withSentAt(a, sentAtMs) {
  const { blobId, key, size, digest, flags, contentType, fileName, durationMs, width, height, thumbnail, caption } = a;
  return new Attachment({ blobId, key, size, digest, flags, contentType, fileName, durationMs, width, height, thumbnail, caption, sentAtMs });
}

/**
 * @param {string} username
 * @param {DeviceCertificate} certificate
 */
function peerDeviceRow(username, certificate) {
  const { deviceId, registrationId } = certificate;
  return { username, deviceId, registrationId, certificate: certificate.encode() };
}

/**
 * Record the account key just seen for `username` (client/store.py observe_identity):
 * first contact stores it; a different key replaces it, flagged changed and unverified.
 * @param {IDBTransaction} t
 * @param {string} username
 * @param {Uint8Array} accountKey
 * @param {number} now
 * @returns {Promise<{check: 'new' | 'same' | 'changed', changed: boolean}>}
 */
async function observeIdentity(t, username, accountKey, now) {
  const identities = t.objectStore('identities');
  const known = await req(identities.get(username));
  if (known && constantTimeEqual(known.accountKey, accountKey)) return { check: 'same', changed: known.changed };
  const changed = Boolean(known);
  await req(identities.put({ username, accountKey, firstSeen: now, changed, verified: false }));
  return { check: changed ? 'changed' : 'new', changed };
}

/**
 * Move a message's status forwards (never back; `failed` only from `pending`).
 * @param {IDBTransaction} t
 * @param {number} id
 * @param {string} status
 * @param {unknown} [serverTime]
 */
async function setStatus(t, id, status, serverTime) {
  const messages = t.objectStore('messages');
  const row = await req(messages.get(id));
  const rank = /** @type {Record<string, number>} */ (RANK);
  const forwards = status === 'failed' ? row?.status === 'pending' : rank[status] > (rank[row?.status] ?? 9);
  if (!row || !forwards) return null;
  row.status = status;
  if (serverTime !== undefined) row.serverTime = serverTime;
  await req(messages.put(row));
  return { id: String(id), peer: row.peer, status };
}

/**
 * Apply a TIMER sent at `sentAt` to the conversation with `peer`; false (nothing changed)
 * if a later one was applied already (client/store.py set_conversation_timer).
 * @param {IDBTransaction} t
 * @param {string} peer
 * @param {number} timerSeconds
 * @param {number} sentAt
 */
async function setConversationTimer(t, peer, timerSeconds, sentAt) {
  const conversations = t.objectStore('conversations');
  const row = await req(conversations.get(peer));
  if (row && row.timerSetAt > sentAt) return false;
  await req(conversations.put({ ...row, peer, timerSeconds, timerSetAt: sentAt }));
  return true;
}

/**
 * Queue a receipt for `sentAts` (messages of `peer`), merged with what already waits.
 * @param {IDBTransaction} t
 * @param {string} peer
 * @param {number} kind
 * @param {unknown[]} sentAts
 */
async function queueReceipt(t, peer, kind, sentAts) {
  const receipts = t.objectStore('receipts');
  const row = (await req(receipts.get([peer, kind]))) ?? { peer, kind, sentAts: [] };
  for (const sentAt of sentAts) if (!row.sentAts.includes(sentAt)) row.sentAts.push(sentAt);
  await req(receipts.put(row));
}

/**
 * Four groups of four hex digits of a link code (client/cli.py link_fingerprint): both
 * devices show it, so that the user can tell the approving device lets in the device in
 * their hand.
 * @param {LinkCode} code
 */
export function linkFingerprint(code) {
  const digest = toHex(primitives.sha256(code.encode())).slice(0, 16);
  return digest.match(/.{4}/g)?.join(' ') ?? digest;
}

/**
 * A ClientError for a link code that does not read.
 * @param {string} text
 */
export function parseLinkCode(text) {
  try {
    return LinkCode.parse(text);
  } catch (error) {
    if (error instanceof ProtocolError) throw ClientError.fromProtocol(error, 'the link code');
    throw error;
  }
}

/**
 * The newest signed version stored for `username`, if it was checked against `accountKey`.
 * @param {any} row a `deviceLists` row
 * @param {Uint8Array} accountKey
 * @returns {import('../protocol/encoding.js').Uint64}
 */
function storedVersion(row, accountKey) {
  return row && constantTimeEqual(row.accountKey, accountKey) ? row.version : 0;
}

/**
 * Forget `username`'s devices that are not in `keep`: their certificates and sessions, so
 * that nothing (a receipt either) is encrypted to them again.
 * @param {IDBTransaction} t
 * @param {string} username
 * @param {Map<number, unknown>} keep
 */
async function forgetDevices(t, username, keep) {
  for (const key of await req(t.objectStore('peerDevices').getAllKeys())) {
    const [name, deviceId] = /** @type {[string, number]} */ (/** @type {unknown} */ (key));
    if (name !== username || keep.has(deviceId)) continue;
    await req(t.objectStore('peerDevices').delete(key));
    await req(t.objectStore('sessions').delete([username, deviceId]));
  }
}

export class WebClient extends EventTarget {
  /**
   * Use `WebClient.open()`.
   * @param {Store} store
   * @param {any} options
   */
  constructor(store, options) {
    super();
    this._store = store;
    this._baseUrl = String(options.baseUrl ?? globalThis.location?.origin).replace(/\/+$/, '');
    this._fetch = options.fetch;
    this._WebSocket = options.WebSocket;
    this._relayOptions = options.relay ?? {};
    this._receiptDelayMs = options.receiptDelayMs ?? 300;
    this._clock = options.clock ?? Date.now;
    this._lockName = `sealpost-state:${options.dbName ?? 'sealpost'}`;
    /** @type {Record<string, any>} */
    this._config = {};
    /** @type {DeviceKeys | null} */
    this._device = null;
    this._api = new Api({ baseUrl: this._baseUrl, fetch: this._fetch });
    /** @type {Relay | null} */
    this._relay = null;
    /** @type {Promise<void> | null} */
    this._connecting = null;
    /** @type {Promise<unknown>} */
    this._queue = Promise.resolve();
    /** @type {Promise<unknown>} */
    this._sendQueue = Promise.resolve();
    /** @type {Promise<void> | null} */
    this._toppingUp = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._receiptTimer = undefined;
    this._flushingReceipts = false;
    this._receiptsAgain = false;
    /** @type {Map<string, number>} receipts owed per sender since the last flush began */
    this._owed = new Map();
    /** @type {Set<string>} refused devices already reported ('device-refused') */
    this._reported = new Set();
    /** @type {{code: LinkCode, privateKey: Uint8Array, address: string, expiresAt: number} | null} */
    this._pendingLink = null;
    /** @type {Map<string, Blob>} files this page sent or already decrypted, by message id */
    this._localFiles = new Map();
    /** @type {ReturnType<typeof setTimeout> | undefined} the next disappearing message's */
    this._expiryTimer = undefined;
    /** @type {Promise<import('./group-client.js').Groups> | null} */
    this._groupsLoading = null;
    /** @type {import('./group-client.js').Groups | null} */
    this._groupsImpl = null;
    /**
     * Groups (group-client.js, loaded on first use): list(), get(id), fetch(id),
     * create(name, members) -> id, add(id, names), remove(id, name), leave(id),
     * rename(id, name), sendText(id, text). A group's conversation is peer `group:<id>`.
     * @type {GroupsApi}
     */
    this.groups = /** @type {any} */ (
      Object.fromEntries(GROUP_METHODS.map((name) => [name, async (/** @type {any[]} */ ...args) => /** @type {any} */ (await this._loadGroups())[name](...args)]))
    );
  }

  /**
   * Open this browser's store (creating it on first use) and load the device, if any.
   *
   * Options beyond `baseUrl` exist for tests and other embeddings: `indexedDB` (an
   * IDBFactory), `dbName`, `crypto`, `fetch`, `WebSocket` (a constructor), `relay`
   * ({baseMs, capMs, pingIntervalMs, pongTimeoutMs, random}), `receiptDelayMs`, `clock`.
   * @param {{baseUrl?: string, indexedDB?: IDBFactory, dbName?: string, crypto?: Crypto,
   *   fetch?: typeof globalThis.fetch, WebSocket?: typeof globalThis.WebSocket,
   *   relay?: Record<string, unknown>, receiptDelayMs?: number, clock?: () => number}} [options]
   */
  static async open(options = {}) {
    const store = await Store.open({ indexedDB: options.indexedDB, name: options.dbName, crypto: options.crypto });
    const client = new WebClient(store, options);
    client._config = await store.config();
    client._device = await store.deviceKeys();
    client._api.token = client._config.token ?? null;
    return client;
  }

  // --- who we are -------------------------------------------------------------------

  /** This browser holds a device and is logged in (false after logout() until login()). */
  get registered() {
    return this.linked && this._config.loggedIn !== false;
  }

  /** This browser holds a device, logged in or not. */
  get linked() {
    return this._device !== null;
  }

  /** @returns {string | null} */
  get username() {
    return this._config.username ?? null;
  }

  /** @returns {number | null} */
  get deviceId() {
    return this._config.deviceId ?? null;
  }

  /** @returns {import('./relay.js').ConnectionState} */
  get connectionState() {
    return this._relay?.state ?? 'offline';
  }

  get receiptsEnabled() {
    return this._config.receipts !== false;
  }

  /** Typing indicators are sent, and others' shown (the Python client's `typing`). */
  get typingEnabled() {
    return this._config.typing !== false;
  }

  /** @returns {DeviceKeys} */
  _own() {
    if (!this._device) throw new ClientError(LocalCode.NOT_REGISTERED, 'this browser holds no account yet; register first');
    if (this._config.loggedIn === false) throw new ClientError(LocalCode.LOGGED_OUT, 'logged out; log in first');
    return this._device;
  }

  /**
   * @param {string} type
   * @param {unknown} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** @param {unknown} error */
  _emitError(error) {
    const { code, message } = asClientError(error);
    this._emit('error', { code, message });
  }

  /**
   * Run `fn` holding the state lock: one session-changing operation at a time, across
   * the tabs of this origin too where the browser has Web Locks.
   * @template T
   * @param {() => Promise<T>} fn
   * @returns {Promise<T>}
   */
  _exclusive(fn) {
    const locks = globalThis.navigator?.locks;
    const run = locks ? () => locks.request(this._lockName, fn) : fn;
    const result = this._queue.then(run);
    this._queue = result.catch(() => {});
    return /** @type {Promise<T>} */ (result);
  }

  /** @param {Record<string, unknown>} values */
  async _setConfig(values) {
    await this._store.write(['config'], async (t) => {
      for (const [name, value] of Object.entries(values)) await req(t.objectStore('config').put(value, name));
    });
    Object.assign(this._config, values);
  }

  /**
   * Generate keys in batches, yielding to the event loop in between (ML-KEM key
   * generation takes a few milliseconds each), reporting each batch to `progress`.
   * @template T
   * @param {number[]} ids
   * @param {(id: number) => T} make
   * @param {(count: number) => void} [progress]
   */
  async _generate(ids, make, progress) {
    const out = [];
    for (let i = 0; i < ids.length; i += KEYGEN_BATCH) {
      const batch = ids.slice(i, i + KEYGEN_BATCH);
      out.push(...batch.map(make));
      progress?.(batch.length);
      await pause(0);
    }
    return out;
  }

  // --- sign-up, login, logout -------------------------------------------------------

  /**
   * Create the account and this browser's device (device 1): the account identity key,
   * the device keys, a signed prekey, a last-resort KEM prekey and 100 one-time prekeys of
   * each kind ('progress' events while they are made), the account's signed device list
   * (version 1, naming this device), then sign up and store it all in one transaction. The
   * server also sets the session cookie.
   * @param {string} username
   * @param {string} password
   * @param {{deviceName?: string, birthDate?: string | null, ageConfirmed?: boolean | null,
   *   consents?: string[] | null}} [options] also the region's age rule (a birth date
   *   YYYY-MM-DD, or the confirmation of the age of self-consent) and the consent purposes
   *   agreed to, sent only when given (docs/api.md, sign-up)
   */
  async register(username, password, { deviceName = 'Web browser', birthDate = null, ageConfirmed = null, consents = null } = {}) {
    if (this._device) {
      throw new ClientError(LocalCode.ALREADY_REGISTERED, `this browser already holds the account ${this.username}`);
    }
    username = normalize(username);
    const account = AccountIdentity.generate();
    const made = await this._makeDevice(account, DEVICE_ID);
    const deviceList = SignedDeviceList.sign(account, username, 1, this._clock(), [made.device.certificate]);
    const registration = await this._api.createAccount(
      username,
      password,
      account.publicKey,
      made.upload(deviceName),
      deviceList.encode(),
      { birthDate, ageConfirmed, consents },
    );
    if (registration.username !== username || registration.deviceId !== DEVICE_ID) {
      throw new ClientError(
        LocalCode.BAD_RESPONSE,
        `sign-up answered for ${registration.username} device ${registration.deviceId}, not ${username} device ${DEVICE_ID}`,
      );
    }
    await this._saveDevice(username, account, made, deviceList, registration.token, false);
  }

  /**
   * Make a device's keys and prekeys ('progress' events meanwhile), sealed for storage.
   * @param {AccountIdentity} account
   * @param {number} deviceId
   */
  async _makeDevice(account, deviceId) {
    const store = this._store;
    const device = DeviceKeys.create(account, deviceId);
    const [signedId] = await store.reserveKeyIds('signed', 1);
    const [lastResortId, ...kemIds] = await store.reserveKeyIds('kem', PREKEY_BATCH + 1);
    const oneTimeIds = await store.reserveKeyIds('one_time', PREKEY_BATCH);
    const total = 2 + 2 * PREKEY_BATCH;
    let done = 0;
    const progress = (/** @type {number} */ count) => this._emit('progress', { done: (done += count), total });
    const signed = SignedPreKeyPair.generate(device, signedId);
    const lastResort = KemPreKeyPair.generate(device, lastResortId, true);
    progress(2);
    const oneTime = await this._generate(oneTimeIds, (id) => OneTimePreKeyPair.generate(id), progress);
    const kem = await this._generate(kemIds, (id) => KemPreKeyPair.generate(device, id, false), progress);

    const now = this._clock();
    const rows = await Promise.all([
      store.sealPrekey('signed', signedId, signed.privateKey, { createdAt: now }),
      store.sealPrekey('kem', lastResortId, lastResort.seed, { lastResort: true, createdAt: now }),
      ...oneTime.map((pair) => store.sealPrekey('one_time', pair.public.keyId, pair.privateKey)),
      ...kem.map((pair) => store.sealPrekey('kem', pair.public.keyId, pair.seed, { lastResort: false, createdAt: now })),
    ]);
    const own = {
      accountSeed: await store.seal(account.seed, 'own:accountSeed'),
      accountKey: account.publicKey,
      signingSeed: await store.seal(device.signingSeed, 'own:signingSeed'),
      identityPrivate: await store.seal(device.identityPrivate, 'own:identityPrivate'),
      certificate: device.certificate.encode(),
    };
    /** @param {string} name @returns {import('./api.js').DeviceUpload} */
    const upload = (name) => ({
      certificate: device.certificate.encode(),
      name,
      signedPrekey: signed.public.encode(),
      lastResortKemPrekey: lastResort.public.encode(),
      oneTimePrekeys: oneTime.map((pair) => pair.public.encode()),
      kemPrekeys: kem.map((pair) => pair.public.encode()),
    });
    return { device, rows, own, upload };
  }

  /**
   * Store a device the server accepted: keys, prekeys, our own identity (as verified: a
   * message from our account under another key is caught), the device list, the config.
   * @param {string} username
   * @param {AccountIdentity} account
   * @param {Awaited<ReturnType<WebClient['_makeDevice']>>} made
   * @param {SignedDeviceList} deviceList
   * @param {string} token
   * @param {boolean} historyExpected
   */
  async _saveDevice(username, account, made, deviceList, token, historyExpected) {
    const store = this._store;
    const now = this._clock();
    const deviceId = made.device.deviceId;
    const sealedToken = await store.sealText(token, 'config:token');
    const config = { username, deviceId, loggedIn: true, receipts: true, lastSentAt: 0, historyExpected };
    await store.write(['config', 'keys', 'prekeys', 'identities', 'deviceLists'], async (t) => {
      const keys = t.objectStore('keys');
      if (await req(keys.get('own'))) throw new ClientError(LocalCode.ALREADY_REGISTERED, 'another tab registered first');
      await req(keys.put(made.own, 'own'));
      for (const row of made.rows) await req(t.objectStore('prekeys').put(row));
      const identity = { username, accountKey: account.publicKey, firstSeen: now, changed: false, verified: true };
      await req(t.objectStore('identities').put(identity));
      await req(
        t.objectStore('deviceLists').put({
          username,
          accountKey: account.publicKey,
          version: deviceList.version,
          list: deviceList.encode(),
          refused: [],
          seenAt: now,
        }),
      );
      for (const [name, value] of Object.entries({ ...config, token: sealedToken })) {
        await req(t.objectStore('config').put(value, name));
      }
    });
    Object.assign(this._config, config, { token });
    this._device = made.device;
    this._api.token = token;
  }

  // --- linking: this browser as a further device of an account ----------------------

  /**
   * New device, step 1: a provisioning address and an ephemeral key. Show `text` as a QR
   * code and as text (and `fingerprint` beside it), then call completeLink().
   * @returns {Promise<LinkOffer>}
   */
  async beginLink() {
    if (this._device) {
      throw new ClientError(LocalCode.ALREADY_REGISTERED, `this browser already holds the account ${this.username}`);
    }
    const slot = await this._api.createProvisioningAddress();
    let address;
    try {
      address = base64UrlDecode(slot.value);
    } catch {
      address = null;
    }
    if (!address || address.length !== ADDRESS_BYTES) {
      throw new ClientError(LocalCode.BAD_RESPONSE, `the provisioning address is not ${ADDRESS_BYTES} bytes of base64url`);
    }
    const privateKey = randomBytes(32);
    const code = new LinkCode(address, primitives.x25519PublicKey(privateKey));
    const expiresAt = Math.min(slot.expiresAt, this._clock() + LINK_TIMEOUT_MS);
    this._pendingLink = { code, privateKey, address: slot.value, expiresAt };
    return { text: code.text(), fingerprint: linkFingerprint(code), address: slot.value, expiresAt };
  }

  /**
   * New device, step 2: wait (long polls of 25 s, until the code expires) for a device of
   * the account to approve; open the sealed message; take the lowest device id the account
   * does not use; make and certify this device's keys ('progress' events), sign the new
   * device list and register with the link token. Afterwards this browser is that device,
   * logged in; history, if the other device sends some, arrives once connected.
   * `onWait` is called before each long poll with the milliseconds left.
   * Throws link_expired (nobody approved in time), closed (`signal` aborted), or what the
   * server refused.
   * @param {{deviceName?: string, signal?: AbortSignal, onWait?: (leftMs: number) => void}} [options]
   * @returns {Promise<{username: string, deviceId: number, historyFollows: boolean}>}
   */
  async completeLink({ deviceName = 'Web browser', signal, onWait } = {}) {
    const pending = this._pendingLink;
    if (!pending) throw new ClientError(LocalCode.NOT_REGISTERED, 'no link code yet: call beginLink() first');
    let sealed = null;
    while (!sealed) {
      const left = pending.expiresAt - this._clock();
      if (left <= 0) throw new ClientError('link_expired', 'the link code expired before a device approved it');
      onWait?.(left);
      const wait = Math.max(1, Math.min(PROVISIONING_WAIT_S, Math.ceil(left / 1000)));
      try {
        sealed = await this._api.waitForProvisioning(pending.address, wait, signal);
      } catch (error) {
        if (signal?.aborted) throw new ClientError(LocalCode.CLOSED, 'linking was cancelled');
        const code = error instanceof ClientError ? error.code : '';
        if (code !== LocalCode.UNREACHABLE && code !== 'server_busy' && code !== 'rate_limited') throw error;
        await pause(1000); // a dropped long poll: ask again
      }
    }
    let message;
    try {
      message = openSealed(pending.code, pending.privateKey, sealed);
    } catch (error) {
      if (error instanceof ProtocolError) throw ClientError.fromProtocol(error, 'the provisioning message');
      throw error;
    }
    this._pendingLink = null;
    const account = AccountIdentity.fromSeed(message.accountSeed);
    const username = message.username;
    const keys = await this._ownKeysForLinking(username, message.linkToken);
    if (!constantTimeEqual(keys.identityKey, account.publicKey)) {
      throw new ClientError(
        'untrusted_identity',
        `the server lists another identity key for ${username} than the one your other device sent`,
      );
    }
    const current = this._checkServed(username, keys, 0);
    const taken = new Set([
      ...current.accepted.keys(),
      ...current.refused.keys(),
      ...current.deviceList.devices.map((d) => d.deviceId),
      ...keys.devices.map((d) => d.deviceId),
    ]);
    let deviceId = 1;
    while (taken.has(deviceId)) deviceId += 1;
    const made = await this._makeDevice(account, deviceId);
    const deviceList = SignedDeviceList.sign(account, username, Number(current.deviceList.version) + 1, this._clock(), [
      ...current.accepted.values(),
      made.device.certificate,
    ]);
    const registration = await this._api.addLinkedDevice(username, message.linkToken, made.upload(deviceName), deviceList.encode());
    if (registration.username !== username || registration.deviceId !== deviceId) {
      throw new ClientError(
        LocalCode.BAD_RESPONSE,
        `linking answered for ${registration.username} device ${registration.deviceId}, not ${username} device ${deviceId}`,
      );
    }
    await this._saveDevice(username, account, made, deviceList, registration.token, message.sendHistory);
    return { username, deviceId, historyFollows: message.sendHistory };
  }

  /** Forget the link code of beginLink() (the page gave up or starts again). */
  cancelLink() {
    this._pendingLink = null;
  }

  /**
   * The account's keys for a device that has no token yet: asked without credentials
   * first; if the server wants some, with the link token as the bearer token.
   * @param {string} username
   * @param {string} linkToken
   */
  async _ownKeysForLinking(username, linkToken) {
    try {
      return await this._api.accountKeys(username, { bearer: false });
    } catch (error) {
      if (!(error instanceof ClientError) || !['unauthorized', 'forbidden'].includes(error.code)) throw error;
      return this._api.accountKeys(username, { token: linkToken });
    }
  }

  /**
   * Existing device: what a link code would let in, for the confirmation the user must
   * give first (whoever holds the code gets the account key).
   * @param {string} text the link code, as typed or pasted
   */
  previewLink(text) {
    const code = parseLinkCode(text);
    return { fingerprint: linkFingerprint(code), username: this.username, address: code.addressText };
  }

  /**
   * Existing device: let the device showing the link code join this account (ask the user
   * first). Gets a link token, seals the username, the account key and the token to the
   * code and leaves them at its provisioning address; then waits (at most `timeoutMs`)
   * until a new device appears in the account's signed device list, and if `historyBytes`
   * > 0 sends it the newest texts, up to that many bytes of records, as HISTORY chunks
   * (one queued envelope each: an interrupted transfer resumes on the next connection).
   * `onStage` hears 'sealed' (left for the new device), 'joined' and 'history'.
   * @param {string} text the link code
   * @param {{historyBytes?: number, timeoutMs?: number, signal?: AbortSignal,
   *   onStage?: (stage: string, detail?: unknown) => void}} [options]
   * @returns {Promise<{deviceIds: number[], historyMessages: number, historyChunks: number}>}
   */
  async approveLink(text, { historyBytes = DEFAULT_HISTORY_BYTES, timeoutMs = LINK_TIMEOUT_MS, signal, onStage } = {}) {
    if (!Number.isInteger(historyBytes) || historyBytes < 0) {
      throw new ClientError('invalid_value', 'historyBytes must be 0 or more');
    }
    const code = parseLinkCode(text);
    const device = this._own();
    const own = /** @type {string} */ (this.username);
    const before = await this._fetchDevices(own);
    const known = new Set([...before.accepted.keys(), ...before.refused.keys(), device.deviceId]);
    const token = await this._api.createLinkToken();
    const accountSeed = await this._store.unseal((await this._store.get('keys', 'own')).accountSeed, 'own:accountSeed');
    const message = new ProvisionMessage({ username: own, accountSeed, linkToken: token.value, sendHistory: historyBytes > 0 });
    await this._api.putProvisioning(code.addressText, seal(code, message));
    onStage?.('sealed');
    const deadline = this._clock() + timeoutMs;
    /** @type {Map<number, DeviceCertificate>} */
    let joined = new Map();
    for (;;) {
      if (signal?.aborted) throw new ClientError(LocalCode.CLOSED, 'linking was cancelled');
      try {
        const devices = await this._fetchDevices(own);
        joined = new Map([...devices.certificates].filter(([id]) => !known.has(id)));
        if (joined.size) break;
      } catch (error) {
        const code = error instanceof ClientError ? error.code : '';
        if (code !== LocalCode.UNREACHABLE && code !== 'server_busy' && code !== 'rate_limited') throw error;
      }
      if (this._clock() >= deadline) {
        throw new ClientError('link_expired', `no new device joined ${own} in time`);
      }
      await pause(LINK_POLL_MS);
    }
    const deviceIds = [...joined.keys()].sort((a, b) => a - b);
    onStage?.('joined', { deviceIds });
    if (!historyBytes) return { deviceIds, historyMessages: 0, historyChunks: 0 };
    const records = await this._historyRecords(historyBytes);
    onStage?.('history', { messages: records.length });
    const historyChunks = await this._sendHistory(joined, records);
    return { deviceIds, historyMessages: records.length, historyChunks };
  }

  /**
   * The newest texts whose records fit `maxBytes` together, oldest first.
   * @param {number} maxBytes
   */
  async _historyRecords(maxBytes) {
    const rows = await this._store.getAll('messages');
    /** @type {HistoryRecord[]} */
    const records = [];
    let size = 0;
    for (const row of this._ordered(rows).reverse()) {
      if (row.kind !== 'text' || row.status === 'failed' || !row.text || row.timerSeconds) continue; // never a disappearing one
      const text = await this._store.unsealText(row.text, 'message');
      const record = new HistoryRecord(row.peer, row.direction === 'out', Number(row.sentAt ?? row.serverTime ?? 0), text);
      size += encodeHistoryRecords([record]).length - 1; // less the count byte
      if (size > maxBytes) break;
      records.push(record);
    }
    return records.reverse();
  }

  /**
   * Queue `records` as HISTORY chunks for our own `devices` (all in one transaction, so a
   * transfer is queued whole or not at all), then send them in order. Returns the number
   * of chunks.
   * @param {Map<number, DeviceCertificate>} devices
   * @param {HistoryRecord[]} records
   */
  async _sendHistory(devices, records) {
    await this.connect();
    const own = /** @type {string} */ (this.username);
    const store = this._store;
    const target = { username: own, certificates: devices, bundles: await this._claimBundles(own, devices) };
    const entries = await this._exclusive(async () => {
      const now = this._clock();
      const sentAt = await this._nextSentAt(now);
      let chunks;
      try {
        chunks = splitHistory(records, randomBytes(HISTORY_TRANSFER_ID_BYTES), sentAt);
      } catch (error) {
        if (error instanceof ProtocolError) throw ClientError.fromProtocol(error, 'history');
        throw error;
      }
      const cache = new Map();
      /** @type {DeviceMessage[][]} */
      const payloads = [];
      /** @type {Uint8Array[]} */
      const contents = [];
      for (const chunk of chunks) {
        const content = encodeContent(chunk, true);
        payloads.push(await this._encryptFor(target, content, cache));
        contents.push(await store.seal(content, 'outbox'));
      }
      const sessions = await this._sealSessions(cache, now);
      const written = await store.write(SENDING_STORES, async (t) => {
        await req(t.objectStore('config').put(sentAt, 'lastSentAt'));
        const all = [];
        for (const [i, content] of contents.entries()) {
          all.push(...(await this._addOutbox(t, [target], [payloads[i]], i ? [] : sessions, content, null, null, now)));
        }
        return all;
      });
      this._config.lastSentAt = sentAt;
      return written;
    });
    for (const entry of entries) await this._dispatch(entry);
    return entries.length;
  }

  // --- this account's devices -------------------------------------------------------

  /**
   * This account's devices as the server lists them (`current`: this browser), with
   * whether the account's signed device list names each.
   * @returns {Promise<(import('./api.js').OwnDevice & {listed: boolean})[]>}
   */
  async devices() {
    this._own();
    const [devices, checked] = await Promise.all([this._api.devices(), this._fetchDevices(/** @type {string} */ (this.username))]);
    return devices
      .map((d) => ({ ...d, listed: checked.accepted.has(d.deviceId) }))
      .sort((a, b) => a.deviceId - b.deviceId);
  }

  /**
   * @param {number} deviceId
   * @param {string} name
   */
  async renameDevice(deviceId, name) {
    this._own();
    name = String(name).trim();
    if (!name) throw new ClientError('invalid_value', 'the device name is empty');
    return this._api.renameDevice(deviceId, name);
  }

  /**
   * Revoke a device of this account: sign a device list without it (version + 1) and
   * have the server delete it (its token, prekeys and queue). Returns true if it was this
   * browser's device, which can then no longer reach the server.
   * @param {number} deviceId
   */
  async revokeDevice(deviceId) {
    const device = this._own();
    const own = /** @type {string} */ (this.username);
    const devices = await this._fetchDevices(own);
    if (!devices.accepted.has(deviceId) && !devices.refused.has(deviceId)) {
      throw new ClientError('unknown_device', `${own} has no device ${deviceId}`);
    }
    const accountSeed = await this._store.unseal((await this._store.get('keys', 'own')).accountSeed, 'own:accountSeed');
    const account = AccountIdentity.fromSeed(accountSeed);
    const stored = storedVersion(await this._store.get('deviceLists', own), account.publicKey);
    const version = devices.deviceList.version > stored ? devices.deviceList.version : stored;
    const remaining = [...devices.accepted.values()].filter((c) => c.deviceId !== deviceId);
    const now = this._clock();
    const deviceList = SignedDeviceList.sign(account, own, Number(version) + 1, now, remaining);
    await this._api.revokeDevice(deviceId, deviceList.encode());
    const keep = new Map(remaining.map((c) => [c.deviceId, c]));
    await this._store.write(['deviceLists', 'peerDevices', 'sessions'], async (t) => {
      const row = { username: own, accountKey: account.publicKey, version: deviceList.version, list: deviceList.encode(), refused: [], seenAt: now };
      await req(t.objectStore('deviceLists').put(row));
      await forgetDevices(t, own, keep);
    });
    return deviceId === device.deviceId;
  }

  /**
   * The devices of `username` the last check refused (never encrypted to): for a warning
   * in the conversation. [] when none, or when nothing was checked yet.
   * @param {string} username
   * @returns {Promise<{deviceId: number, reason: string}[]>}
   */
  async refusedDevices(username) {
    const row = await this._store.get('deviceLists', normalize(username));
    return row?.refused ?? [];
  }

  /**
   * Log in again (POST /api/v1/session) with the device this browser already holds.
   * @param {string} username
   * @param {string} password
   */
  async login(username, password) {
    username = normalize(username);
    if (!this._device || this.username !== username) {
      throw new ClientError(
        LocalCode.NOT_LINKED,
        `this browser holds no device of ${username}; sign in where you registered, or register here`,
      );
    }
    await this._api.login(username, password);
    await this._setConfig({ loggedIn: true });
  }

  /** Close the connection and end the web session. The device and its history stay. */
  async logout() {
    this._disconnect();
    try {
      await this._api.logout();
    } catch {
      // Logged out here whatever the server says: the keys no longer act until login().
    }
    if (this._device) await this._setConfig({ loggedIn: false });
  }

  // --- the connection ---------------------------------------------------------------

  /**
   * Open the relay connection (once; later calls wait for the same), then look after
   * prekeys (top-up, rotation) and resend what the outbox still holds. Afterwards the
   * connection comes back by itself ('connection' events).
   */
  async connect() {
    this._own();
    if (this._connecting) return this._connecting;
    const relay = new Relay({
      url: relayUrl(this._baseUrl),
      token: this._config.token,
      onPush: (push) => this._handlePush(push),
      ...(this._WebSocket ? { WebSocket: this._WebSocket } : {}),
      ...this._relayOptions,
    });
    relay.addEventListener('state', (event) => this._emit('connection', /** @type {CustomEvent} */ (event).detail));
    relay.addEventListener('push-error', (event) => this._emitError(/** @type {CustomEvent} */ (event).detail.error));
    relay.addEventListener('failed', (event) => {
      if (this._relay === relay) this._disconnect();
      this._emitError(/** @type {CustomEvent} */ (event).detail.error);
    });
    this._relay = relay;
    const connecting = (async () => {
      try {
        await relay.start();
      } catch (error) {
        if (this._relay === relay) this._disconnect();
        throw await this._whyUnreachable(error);
      }
      try {
        await this._maintainPrekeys();
      } catch (error) {
        this._emitError(error);
      }
      await this._flushOutbox();
      if ((await this._store.getAll('receipts')).length) this._scheduleReceipts(); // left behind
      this._scheduleExpiry();
    })();
    this._connecting = connecting;
    return connecting;
  }

  /** Close the connection and the store. Unsent messages go out on the next connect(). */
  close() {
    this._disconnect();
    this._store.close();
  }

  _disconnect() {
    clearTimeout(this._expiryTimer);
    this._expiryTimer = undefined;
    clearTimeout(this._receiptTimer);
    this._receiptTimer = undefined;
    const relay = this._relay;
    this._relay = null;
    this._connecting = null;
    relay?.close();
  }

  /**
   * A browser does not show why a WebSocket handshake failed; the REST API tells a
   * revoked or unknown token (unauthorized) from an unreachable server.
   * @param {unknown} error
   */
  async _whyUnreachable(error) {
    try {
      await this._api.prekeyCounts();
    } catch (probe) {
      if (probe instanceof ClientError && probe.code === 'unauthorized') return probe;
    }
    return asClientError(error, LocalCode.UNREACHABLE);
  }

  _relayOrThrow() {
    if (!this._relay) throw new ClientError(LocalCode.CLOSED, 'not connected to the relay');
    return this._relay;
  }

  async _flushOutbox() {
    for (const entry of await this._store.getAll('outbox')) {
      try {
        await this._dispatch(entry);
      } catch (error) {
        if (error instanceof ClientError && error.code === LocalCode.CLOSED) return; // next time
        this._emitError(error);
      }
    }
  }

  // --- receiving --------------------------------------------------------------------

  /** @param {Push} push */
  async _handlePush(push) {
    if (push instanceof Deliver) {
      const events = await this._exclusive(() => this._processDeliver(push));
      if (push.seq !== 0) this._relay?.ack([push.seq]); // seq 0: ephemeral, never acked
      for (const [type, detail] of events) if (type !== 'owed') this._emit(type, detail);
      if (events.some(([type]) => type === 'owed')) this._receiptsDue(push.sender);
      if (events.some(([type]) => type === 'message')) this._scheduleExpiry();
      if (this._groupsImpl?.fetchDue) this._groupsImpl.fetchPending().catch((error) => this._emitError(error));
    } else if (push instanceof Notice && push.kind === NoticeKind.PREKEYS_LOW) {
      this._topUp(true).catch((error) => this._emitError(error));
    }
  }

  /**
   * Decrypt one envelope and commit everything it changes in one transaction; returns the
   * events to emit once committed (the caller acknowledges first).
   * @param {Deliver} frame
   * @returns {Promise<[string, unknown][]>}
   */
  async _processDeliver(frame) {
    const store = this._store;
    const { sender, senderDevice, payload } = frame;
    const device = this._own();
    const now = this._clock();
    if (payload[0] === 0x13) return (await this._loadGroups()).receive(frame); // a SenderKeyMessage
    let record;
    let result;
    try {
      record = (await store.loadSession(sender, senderDevice)) ?? new SessionRecord();
      const prekeys =
        peekKind(payload) === MessageKind.PREKEY ? await store.prekeysFor(PreKeyMessage.decode(payload)) : NO_PREKEYS;
      // The account key is checked below against the identity store, so that a changed
      // key can be accepted and flagged instead of refused.
      result = record.decrypt(payload, device, prekeys);
      if (result.senderCertificate) this._checkNewSession(frame, result);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      if (error.code === ErrorCode.DUPLICATE_MESSAGE) return []; // stored before: just ack
      return store.write(['messages'], (t) => this._addUndecryptable(t, frame, error.code, now));
    }
    const decrypted = result;
    let content = null;
    let contentError = null;
    try {
      content = decodeContent(decrypted.plaintext);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      contentError = error.code;
    }
    const own = this.username;
    const ownAccount = sender === own;
    // A disappearing message is processed as what it wraps, then given its timer: the
    // receiver's clock starts when it is shown (markRead), a copy of what our other device
    // sent at its sent_at.
    let timer = 0;
    if (content) [content, timer] = unwrapExpiring(content);
    const sessionRow = await store.sealSession(sender, senderDevice, record, now);
    const text = content instanceof Text || (content instanceof SentTranscript && ownAccount) ? content.body : null;
    const sealedText = text === null ? null : await store.sealText(text, 'message');
    /** @type {Attachment | null} */
    let pointer = null;
    if (content instanceof Attachment && !ownAccount) pointer = content;
    if (content instanceof SentContent && ownAccount && content.inner instanceof Attachment) pointer = content.inner;
    const sealedPointer = pointer ? await store.seal(encodeContent(pointer), 'attachment') : null;
    const receipts = this.receiptsEnabled && !ownAccount;
    const history = content instanceof HistoryChunk && ownAccount ? await this._prepareHistory(content, senderDevice, now) : null;
    const forGroup = content instanceof SenderKeyDistribution || content instanceof GroupUpdate;
    const groups = forGroup ? await this._loadGroups() : null;
    const group = groups ? await groups.preparePairwise(content, sender, senderDevice) : null;
    const stores = ['sessions', 'identities', 'peerDevices', 'prekeys', 'messages', 'receipts', 'conversations', 'groups', 'senderKeys'];
    if (history) stores.push('config', 'historyChunks', 'historyTransfers');
    /** @type {Record<string, unknown>} the timer fields of a disappearing message's row */
    const expiry = timer ? { timerSeconds: timer } : {};
    if (timer && (content instanceof SentTranscript || content instanceof SentContent)) {
      expiry.expiresAt = Number(content.sentAtMs) + timer * 1000;
    }

    return store.write(stores, async (t) => {
      /** @type {[string, unknown][]} */
      const events = [];
      if (decrypted.senderCertificate && decrypted.senderAccountKey) {
        const { check } = await observeIdentity(t, sender, decrypted.senderAccountKey, now);
        if (check === 'changed') events.push(['identity-changed', { username: sender }]);
        await req(t.objectStore('peerDevices').put(peerDeviceRow(sender, decrypted.senderCertificate)));
      }
      await req(t.objectStore('sessions').put(sessionRow));
      const prekeys = t.objectStore('prekeys');
      if (decrypted.consumedOneTimePrekeyId !== null) await req(prekeys.delete(['one_time', decrypted.consumedOneTimePrekeyId]));
      if (decrypted.consumedKemPrekeyId !== null) await req(prekeys.delete(['kem', decrypted.consumedKemPrekeyId]));
      if (contentError === ErrorCode.UNKNOWN_TYPE) {
        // A newer client's content (say, a typing indicator), not damage: the session
        // advances, nothing is stored.
      } else if (contentError !== null) {
        events.push(...(await this._addUndecryptable(t, frame, contentError, now)));
      } else if (groups && group) {
        events.push(...(await groups.takePairwise(t, group, frame, now)));
      } else if (content instanceof Text) {
        const row = {
          kind: 'text',
          direction: 'in',
          peer: sender,
          senderDevice,
          text: sealedText,
          code: null,
          sentAt: content.sentAtMs,
          serverTime: frame.serverTimeMs,
          receivedAt: now,
          status: 'received',
          seq: frame.seq,
          ...expiry,
        };
        const id = await req(t.objectStore('messages').add(row));
        if (receipts) {
          await queueReceipt(t, sender, ReceiptKind.DELIVERED, [content.sentAtMs]);
          events.push(['owed', null]);
        }
        events.push(['message', { message: publicMessage({ ...row, id }, text) }]);
      } else if (pointer && sealedPointer) {
        // A file from them, or the pointer of one our other device sent.
        const incoming = !ownAccount;
        const row = {
          kind: 'attachment',
          direction: incoming ? 'in' : 'out',
          peer: incoming ? sender : /** @type {SentContent} */ (content).destination,
          senderDevice,
          text: null,
          attachment: sealedPointer,
          code: null,
          sentAt: /** @type {Attachment | SentContent} */ (content).sentAtMs,
          serverTime: frame.serverTimeMs,
          receivedAt: now,
          status: incoming ? 'received' : 'sent',
          seq: frame.seq,
          ...expiry,
        };
        const id = await req(t.objectStore('messages').add(row));
        if (incoming && receipts) {
          await queueReceipt(t, sender, ReceiptKind.DELIVERED, [row.sentAt]);
          events.push(['owed', null]);
        }
        events.push(['message', { message: publicMessage({ ...row, id }, null, pointer) }]);
      } else if (content instanceof TimerUpdate && !ownAccount) {
        events.push(...(await this._takeTimer(t, sender, 'in', content, frame, now)));
      } else if (content instanceof SentContent && ownAccount && content.inner instanceof TimerUpdate) {
        events.push(...(await this._takeTimer(t, content.destination, 'out', content.inner, frame, now)));
      } else if (content instanceof Typing && !ownAccount) {
        if (this.typingEnabled) events.push(['typing', { peer: sender, device: senderDevice, started: content.action === TypingAction.STARTED }]);
      } else if (content instanceof SentTranscript && ownAccount) {
        // Our other device sent this: ours, in the conversation with its destination.
        const row = {
          kind: 'text',
          direction: 'out',
          peer: content.destination,
          senderDevice,
          text: sealedText,
          code: null,
          sentAt: content.sentAtMs,
          serverTime: frame.serverTimeMs,
          receivedAt: now,
          status: 'sent',
          seq: frame.seq,
          ...expiry,
        };
        const id = await req(t.objectStore('messages').add(row));
        events.push(['message', { message: publicMessage({ ...row, id }, text) }]);
      } else if (history) {
        events.push(...(await this._takeHistoryChunk(t, history)));
      } else if (content instanceof Receipt && !ownAccount) {
        const status = content.kind === ReceiptKind.READ ? 'read' : 'delivered';
        for (const sentAt of content.messageSentAtMs) {
          if (typeof sentAt !== 'number') continue; // never one of ours
          const rows = await req(t.objectStore('messages').index('sentAt').getAll([sender, 'out', sentAt]));
          for (const row of rows) {
            const update = await setStatus(t, row.id, status);
            if (update) events.push(['status', update]);
          }
        }
      }
      return events;
    });
  }

  /**
   * A PreKeyMessage set up a session: it must come from the device the relay names, and
   * one from our own account must carry our own account key.
   * @param {Deliver} frame
   * @param {import('../protocol/session.js').Decrypted} result
   */
  _checkNewSession(frame, result) {
    const certificate = /** @type {DeviceCertificate} */ (result.senderCertificate);
    if (certificate.deviceId !== frame.senderDevice) {
      throw new ProtocolError(
        ErrorCode.INVALID_VALUE,
        `certificate of device ${certificate.deviceId} on an envelope from device ${frame.senderDevice}`,
      );
    }
    const accountKey = /** @type {Uint8Array} */ (result.senderAccountKey);
    if (frame.sender === this.username && !constantTimeEqual(accountKey, this._own().accountKey)) {
      throw new ProtocolError(ErrorCode.UNTRUSTED_IDENTITY, 'a message from our own account under another key');
    }
  }

  /**
   * Record an envelope that could not be read (once per seq, however often redelivered).
   * @param {IDBTransaction} t
   * @param {Deliver} frame
   * @param {number} code
   * @param {number} now
   * @returns {Promise<[string, unknown][]>}
   */
  async _addUndecryptable(t, frame, code, now) {
    const messages = t.objectStore('messages');
    if (frame.seq !== 0 && (await req(messages.index('useq').count(/** @type {number} */ (frame.seq))))) return [];
    /** @type {Record<string, unknown>} */
    const row = {
      kind: 'undecryptable',
      direction: 'in',
      peer: frame.sender,
      senderDevice: frame.senderDevice,
      text: null,
      code: errorSlug(code) ?? String(code),
      sentAt: null,
      serverTime: frame.serverTimeMs,
      receivedAt: now,
      status: 'received',
      seq: frame.seq,
    };
    if (frame.seq !== 0) row.useq = frame.seq;
    const id = await req(messages.add(row));
    return [['undecryptable', { message: publicMessage({ ...row, id }, null) }]];
  }

  /**
   * A TIMER from `peer`, or (SENT_CONTENT) one our other device sent to `peer`: applied
   * unless a later one already was (two people setting it at once end up with the same),
   * and stored as the conversation's notice.
   * @param {IDBTransaction} t
   * @param {string} peer
   * @param {'in' | 'out'} direction
   * @param {TimerUpdate} update
   * @param {Deliver} frame
   * @param {number} now
   * @returns {Promise<[string, unknown][]>}
   */
  async _takeTimer(t, peer, direction, update, frame, now) {
    const sentAt = Number(update.sentAtMs);
    if (!(await setConversationTimer(t, peer, update.timerSeconds, sentAt))) return [];
    const row = {
      kind: 'timer',
      direction,
      peer,
      senderDevice: frame.senderDevice,
      text: null,
      code: null,
      sentAt,
      serverTime: frame.serverTimeMs,
      receivedAt: now,
      status: direction === 'in' ? 'read' : 'sent', // a notice: nothing unread, no receipt
      seq: frame.seq,
      timerSeconds: update.timerSeconds,
    };
    const id = await req(t.objectStore('messages').add(row));
    return [['message', { message: publicMessage({ ...row, id }, null) }], ['timer', { peer, timerSeconds: update.timerSeconds, by: direction === 'in' ? peer : this.username }]];
  }

  // --- history from our other device -----------------------------------------------

  /**
   * Everything a HISTORY chunk from our own `device` needs written, computed before the
   * transaction (unsealing and sealing cannot run inside one): null when it is to be
   * dropped (no history expected, a transfer already imported, a duplicate, a total that
   * disagrees with the chunks held). When it completes its transfer, the records of every
   * chunk, in order, less those already in the history (same peer, direction, sent_at and
   * text), sealed as message rows. Runs under the state lock, so nothing changes between
   * this and the write.
   * @param {HistoryChunk} chunk
   * @param {number} device
   * @param {number} now
   */
  async _prepareHistory(chunk, device, now) {
    const store = this._store;
    if (!(await store.get('config', 'historyExpected'))) return null; // not linked with history to follow
    const transferId = toHex(chunk.transferId);
    if (await store.get('historyTransfers', transferId)) return null; // imported already
    const held = await store.getAll('historyChunks', { index: 'transferId', query: transferId });
    if (held.some((row) => row.total !== chunk.total) || held.some((row) => row.index === chunk.index)) return null;
    const encoded = encodeContent(chunk);
    const chunkRow = {
      transferId,
      index: chunk.index,
      total: chunk.total,
      senderDevice: device,
      chunk: await store.seal(encoded, 'history'),
      receivedAt: now,
    };
    const prepared = { transferId, chunkRow, received: held.length + 1, total: chunk.total, rows: /** @type {any[] | null} */ (null) };
    if (held.length + 1 < chunk.total) return prepared;

    /** @type {HistoryChunk[]} */
    const chunks = [chunk];
    for (const row of held) chunks.push(/** @type {HistoryChunk} */ (decodeContent(await store.unseal(row.chunk, 'history'))));
    chunks.sort((a, b) => a.index - b.index);
    const seen = new Set();
    prepared.rows = [];
    for (const record of chunks.flatMap((c) => c.records)) {
      const direction = record.outgoing ? 'out' : 'in';
      const sentAt = Number(record.sentAtMs);
      const key = JSON.stringify([record.peer, direction, sentAt, record.text]);
      if (seen.has(key)) continue;
      seen.add(key);
      const known = await store.getAll('messages', { index: 'sentAt', query: [record.peer, direction, sentAt] });
      let duplicate = false;
      for (const row of known) {
        if (row.kind === 'text' && row.text && (await store.unsealText(row.text, 'message')) === record.text) duplicate = true;
      }
      if (duplicate) continue;
      prepared.rows.push({
        kind: 'text',
        direction,
        peer: record.peer,
        senderDevice: record.outgoing ? device : 0,
        text: await store.sealText(record.text, 'message'),
        code: null,
        sentAt,
        serverTime: null,
        receivedAt: now,
        status: record.outgoing ? 'sent' : 'read', // no receipt is owed for history
        seq: null,
        imported: true,
      });
    }
    return prepared;
  }

  /**
   * Keep one prepared HISTORY chunk; once every chunk of its transfer is here, import the
   * records, drop the chunks, remember the transfer and expect no more history.
   * @param {IDBTransaction} t
   * @param {NonNullable<Awaited<ReturnType<WebClient['_prepareHistory']>>>} history
   * @returns {Promise<[string, unknown][]>}
   */
  async _takeHistoryChunk(t, history) {
    const chunks = t.objectStore('historyChunks');
    await req(chunks.put(history.chunkRow));
    /** @type {[string, unknown][]} */
    const events = [['history-progress', { received: history.received, total: history.total }]];
    if (!history.rows) return events;
    for (const row of history.rows) await req(t.objectStore('messages').add(row));
    for (const key of await req(chunks.index('transferId').getAllKeys(history.transferId))) await req(chunks.delete(key));
    const done = { transferId: history.transferId, imported: history.rows.length, importedAt: history.chunkRow.receivedAt };
    await req(t.objectStore('historyTransfers').put(done));
    await req(t.objectStore('config').put(false, 'historyExpected'));
    this._config.historyExpected = false;
    events.push(['history-imported', { count: history.rows.length }]);
    return events;
  }

  // --- sending ----------------------------------------------------------------------

  /**
   * Send `text` to every device of `username` (and a copy to this account's other
   * devices). Resolves once the server accepted it, with the message (status 'sent', or
   * later if a receipt overtook the answer); a 'message' event announces it as 'pending'
   * as soon as it is stored. Throws ClientError: untrusted_identity (their key changed:
   * trust() first), unknown_account, too_large, device_mismatch (the device list kept
   * changing), or what the server refused (the message is then 'failed').
   * @param {string} username
   * @param {string} text
   * @returns {Promise<Message>}
   */
  async sendText(username, text) {
    if (isGroupPeer(username)) return this.groups.sendText(username, text); // peer group:<id>
    const peer = normalize(username);
    if (typeof text !== 'string' || !text) throw new ClientError('invalid_value', 'the message text is empty');
    const size = utf8Encode(text).length;
    if (size > MAX_TEXT_BYTES) {
      throw new ClientError('too_large', `the message is ${size} bytes; the limit is ${MAX_TEXT_BYTES}`);
    }
    return this._sendOutgoing(
      peer,
      async (sentAt) => ({ inner: new Text(text, sentAt), fields: { kind: 'text', text: await this._store.sealText(text, 'message') } }),
      (row) => publicMessage(row, text),
    );
  }

  /**
   * Send a file: encrypt it with a fresh key as it is read, upload the blob (resuming
   * after a lost connection; `onProgress(done, total)` in blob bytes; `signal` cancels),
   * then send its pointer like a text (EXPIRING while the conversation has a timer; the
   * copy for our other devices as SENT_CONTENT). `thumbnail` (a small JPEG), `width` and
   * `height` describe an image; `voice` and `durationMs` a voice message. Throws
   * ClientError attachment_too_large (above 100 MiB), closed (cancelled), what the upload
   * met, and what sendText throws.
   * @param {string} username
   * @param {Blob} file
   * @param {{fileName?: string, contentType?: string, voice?: boolean, durationMs?: number,
   *   width?: number, height?: number, thumbnail?: Uint8Array, caption?: string,
   *   onProgress?: (done: number, total: number) => void, signal?: AbortSignal}} [options]
   * @returns {Promise<Message>}
   */
  async sendFile(username, file, options = {}) {
    const peer = normalize(username);
    await this.connect();
    // Fail before a long upload, not after: an unknown account, a changed key.
    if (peer !== this.username) await this._fetchDevices(peer);
    const uploaded = await uploadFile(this._api, file, { onProgress: options.onProgress, signal: options.signal });
    const name = options.fileName ?? (file instanceof File ? file.name : '');
    const pointer = new Attachment({
      ...uploaded,
      flags: options.voice ? AttachmentFlags.VOICE : AttachmentFlags.NONE,
      contentType: (options.contentType ?? file.type) || 'application/octet-stream',
      fileName: name,
      durationMs: Math.round(options.durationMs ?? 0),
      width: options.width ?? 0,
      height: options.height ?? 0,
      thumbnail: options.thumbnail ?? new Uint8Array(0),
      caption: options.caption ?? '',
      sentAtMs: 0,
    });
    /** @type {Attachment} */
    let sent = pointer;
    const message = await this._sendOutgoing(
      peer,
      async (sentAt) => {
        sent = withSentAt(pointer, sentAt);
        return { inner: sent, fields: { kind: 'attachment', attachment: await this._store.seal(encodeContent(sent), 'attachment') } };
      },
      (row) => {
        this._localFiles.set(String(row.id), file); // shown from here, not downloaded again
        return publicMessage(row, null, sent);
      },
    );
    return message;
  }

  /**
   * Set the conversation's disappearing-messages timer (0: off) and tell `username` (and
   * our other devices) with a TIMER, stored as the conversation's notice. Afterwards texts
   * and files to them go as EXPIRING with SEND EXPIRES ttl = the timer.
   * @param {string} username
   * @param {number} seconds
   * @returns {Promise<Message>}
   */
  async setTimer(username, seconds) {
    const peer = normalize(username);
    if (!Number.isSafeInteger(seconds) || seconds < 0 || seconds > MAX_TTL_SECONDS) {
      throw new ClientError('invalid_value', `the timer must be 0 to ${MAX_TTL_SECONDS} seconds`);
    }
    const message = await this._sendOutgoing(
      peer,
      async (sentAt) => ({ inner: new TimerUpdate(seconds, sentAt), fields: { kind: 'timer', timerSeconds: seconds } }),
      (row) => publicMessage(row, null),
      false,
    );
    this._emit('timer', { peer, timerSeconds: seconds, by: this.username });
    return message;
  }

  /**
   * The disappearing-messages timer of the conversation with `username` (0: off).
   * @param {string} username
   */
  async timer(username) {
    return (await this._store.get('conversations', normalize(username)))?.timerSeconds ?? 0;
  }

  /**
   * Store, then send, what `make(sentAt)` builds for `peer` (see _storeOutgoing); `show`
   * makes the page's view of the stored row.
   * @param {string} peer
   * @param {(sentAt: number) => Promise<{inner: Text | Attachment | TimerUpdate, fields: Record<string, unknown>}>} make
   * @param {(row: any) => Message} show
   * @param {boolean} [disappearing] false: never wrapped in EXPIRING (a TIMER)
   * @returns {Promise<Message>}
   */
  async _sendOutgoing(peer, make, show, disappearing = true) {
    await this.connect();
    const store = this._store;
    // Messages are prepared and stored one at a time, in call order, so that they go out
    // (and are named by sent_at) in the order they were written; each is stored, and
    // shown as pending, without waiting for the previous one's answer.
    const stored = this._sendQueue.then(() => this._storeOutgoing(peer, make, disappearing));
    this._sendQueue = stored.catch(() => {});
    const { row, entries } = await stored;
    this._emit('message', { message: show(row) });
    if (row.expiresAt) this._scheduleExpiry();
    for (const entry of entries) {
      try {
        await this._dispatch(entry);
      } catch (error) {
        if (error instanceof ClientError && error.code === LocalCode.CLOSED) throw error; // resent later
        if (!entry.primary) {
          this._emitError(error); // the copy for our other devices
          continue;
        }
        if (!(await store.get('outbox', /** @type {number} */ (entry.id)))) {
          // Failed for good: our other devices must not hear of a message never sent.
          await store.write(['outbox'], async (t) => {
            for (const other of entries) await req(t.objectStore('outbox').delete(/** @type {number} */ (other.id)));
          });
        }
        throw asClientError(error);
      }
    }
    return show((await store.get('messages', row.id)) ?? row);
  }

  /**
   * Encrypt what `make(sentAt)` builds for `peer`'s devices, and its copy (a SENT
   * transcript for a plain text, else SENT_CONTENT) for our other devices (a note to self
   * too), and store it with its outbox entries and the advanced sessions, in one
   * transaction. While the conversation has a timer (and `disappearing`), a text or a
   * file goes as EXPIRING in EXPIRES sends with ttl_seconds = the timer, and is stored to
   * expire that long after it was sent.
   * @param {string} peer
   * @param {(sentAt: number) => Promise<{inner: Text | Attachment | TimerUpdate, fields: Record<string, unknown>}>} make
   * @param {boolean} disappearing
   */
  async _storeOutgoing(peer, make, disappearing) {
    const store = this._store;
    const own = /** @type {string} */ (this.username);
    /** @type {Target[]} */
    const targets = [];
    /** @type {boolean[]} whether each target gets the transcript rather than the content */
    const transcript = [];
    if (peer !== own) {
      const recipient = await this._fetchDevices(peer);
      if (!recipient.certificates.size) {
        const code = recipient.refused.size ? 'unsigned_device' : 'unknown_device';
        throw new ClientError(code, `${peer} has no devices to send to`);
      }
      const bundles = await this._claimBundles(peer, recipient.certificates);
      targets.push({ username: peer, certificates: recipient.certificates, bundles });
      transcript.push(false);
    }
    const mine = await this._fetchDevices(own);
    if (mine.certificates.size) {
      // skipped when this is the account's only device
      targets.push({ username: own, certificates: mine.certificates, bundles: await this._claimBundles(own, mine.certificates) });
      transcript.push(true);
    }
    const stored = await this._exclusive(async () => {
      const now = this._clock();
      const sentAt = await this._nextSentAt(now);
      const timer = disappearing ? await this.timer(peer) : 0;
      const { inner, fields } = await make(sentAt);
      const outgoing = timer && !(inner instanceof TimerUpdate) ? new Expiring(timer, inner, sentAt) : inner;
      const copy = outgoing instanceof Text ? new SentTranscript(peer, outgoing.body, sentAt) : new SentContent(peer, outgoing, sentAt);
      const cache = new Map();
      /** @type {DeviceMessage[][]} */
      const payloads = [];
      /** @type {Uint8Array[]} */
      const contents = [];
      for (const [i, target] of targets.entries()) {
        const content = encodeContent(transcript[i] ? copy : outgoing, true);
        payloads.push(await this._encryptFor(target, content, cache));
        contents.push(await store.seal(content, 'outbox'));
      }
      const sessions = await this._sealSessions(cache, now);
      return store.write(SENDING_STORES, async (t) => {
        await req(t.objectStore('config').put(sentAt, 'lastSentAt'));
        if (inner instanceof TimerUpdate) await setConversationTimer(t, peer, inner.timerSeconds, sentAt);
        const row = {
          direction: 'out',
          peer,
          senderDevice: this.deviceId,
          text: null,
          code: null,
          sentAt,
          serverTime: null,
          receivedAt: null,
          status: targets.length ? 'pending' : 'sent', // a note to self with no other device
          seq: null,
          ...fields,
          ...(timer ? { timerSeconds: timer, expiresAt: sentAt + timer * 1000 } : {}),
        };
        const id = /** @type {number} */ (await req(t.objectStore('messages').add(row)));
        const entries = await this._addOutbox(t, targets, payloads, sessions, contents, id, peer, now, timer || null);
        return { row: { ...row, id }, entries };
      });
    });
    this._config.lastSentAt = stored.row.sentAt;
    return stored;
  }

  /**
   * A sent_at above every earlier one of this device (receipts name messages by it).
   * @param {number} now
   */
  async _nextSentAt(now) {
    const last = (await this._store.get('config', 'lastSentAt')) ?? 0;
    return Math.max(now, last + 1);
  }

  /**
   * Write outbox entries (and the sessions their encryption advanced) in `t`.
   * @param {IDBTransaction} t
   * @param {Target[]} targets
   * @param {DeviceMessage[][]} payloads per target
   * @param {any[]} sessions sealed session rows
   * @param {Uint8Array | Uint8Array[]} contents sealed padded plaintext (per target, or one for all)
   * @param {number | null} messageId
   * @param {string | null} primary the conversation's peer (whose answer sets the status)
   * @param {number} now
   * @param {number | null} [ttlSeconds] SEND EXPIRES with this ttl (a disappearing message)
   */
  async _addOutbox(t, targets, payloads, sessions, contents, messageId, primary, now, ttlSeconds = null) {
    for (const row of sessions) await req(t.objectStore('sessions').put(row));
    /** @type {OutboxEntry[]} */
    const entries = [];
    for (const [i, target] of targets.entries()) {
      for (const certificate of target.certificates.values()) {
        await req(t.objectStore('peerDevices').put(peerDeviceRow(target.username, certificate)));
      }
      /** @type {OutboxEntry} */
      const entry = {
        messageId,
        recipient: target.username,
        primary: target.username === primary,
        content: Array.isArray(contents) ? contents[i] : contents,
        payloads: payloads[i].map(({ deviceId, registrationId, payload }) => ({ deviceId, registrationId, payload })),
        createdAt: now,
        ttlSeconds,
      };
      entry.id = /** @type {number} */ (await req(t.objectStore('outbox').add(entry)));
      entries.push(entry);
    }
    return entries;
  }

  /**
   * Encrypt `content` once per device of `target`. `cache` carries the advanced session
   * records between calls of one operation (seal them with _sealSessions afterwards);
   * `drop` names devices whose stored session must not be reused.
   * @param {Target} target
   * @param {Uint8Array} content
   * @param {Map<string, [string, number, SessionRecord]>} cache
   * @param {Set<number>} [drop]
   */
  async _encryptFor(target, content, cache, drop = new Set()) {
    const messages = [];
    for (const [deviceId, certificate] of target.certificates) {
      const key = `${target.username}\n${deviceId}`;
      let record = cache.get(key)?.[2] ?? null;
      if (!record) {
        record = drop.has(deviceId) ? null : await this._store.loadSession(target.username, deviceId);
        const bundle = target.bundles.get(deviceId);
        if (bundle) {
          // Keep the old states only if they belong to the same device keys: a
          // PreKeyMessage sent on them may still be on its way to us.
          const keep = record?.states.some((state) => constantTimeEqual(state.remoteIdentityKey, certificate.identityKey));
          record = SessionRecord.initiate(this._own(), bundle, { existing: keep ? record : null });
        } else if (!record) {
          throw new ClientError('no_session', `no session with ${target.username} device ${deviceId}`);
        }
        cache.set(key, [target.username, deviceId, record]);
      }
      try {
        messages.push(new DeviceMessage(deviceId, certificate.registrationId, record.encrypt(content)));
      } catch (error) {
        if (error instanceof ProtocolError) throw ClientError.fromProtocol(error, `${target.username} device ${deviceId}`);
        throw error;
      }
    }
    return messages;
  }

  /**
   * @param {Map<string, [string, number, SessionRecord]>} cache
   * @param {number} now
   */
  _sealSessions(cache, now) {
    return Promise.all([...cache.values()].map(([peer, deviceId, record]) => this._store.sealSession(peer, deviceId, record, now)));
  }

  /**
   * Send one outbox entry until the server accepts it, correcting its device set on
   * DEVICE_MISMATCH (at most MAX_MISMATCH_ROUNDS sends).
   * @param {OutboxEntry} entry
   */
  async _dispatch(entry) {
    if (/** @type {any} */ (entry).group) return (await this._loadGroups()).dispatch(entry); // a GROUP_SEND
    const toFrame = () =>
      new Send({
        requestId: 0,
        recipient: entry.recipient,
        messages: entry.payloads.map((p) => new DeviceMessage(p.deviceId, p.registrationId, p.payload)),
        ...sendFlags(entry.ttlSeconds),
      });
    let frame = toFrame();
    for (let attempt = 1; attempt <= MAX_MISMATCH_ROUNDS; attempt++) {
      const reply = await this._relayOrThrow().request(frame);
      if (reply instanceof SendOk) {
        await this._settle(entry, reply.serverTimeMs);
        return;
      }
      if (reply instanceof DeviceMismatch) {
        if (attempt === MAX_MISMATCH_ROUNDS) break;
        try {
          frame = await this._correctDevices(entry, frame, reply);
        } catch (error) {
          await this._giveUp(entry);
          throw error;
        }
        continue;
      }
      await this._giveUp(entry);
      const slug = typeof reply.code === 'number' ? errorSlug(reply.code) : undefined;
      throw new ClientError(slug ?? LocalCode.BAD_RESPONSE, reply.message || `relay error ${reply.code}`);
    }
    await this._giveUp(entry);
    throw new ClientError(
      'device_mismatch',
      `the devices of ${entry.recipient} kept changing; gave up after ${MAX_MISMATCH_ROUNDS} attempts`,
    );
  }

  /** The group module, loaded and bound to this client on first use. */
  _loadGroups() {
    this._groupsLoading ??= import('./group-client.js').then((module) => {
      module.init(/** @type {any} */ (GROUP_DEPS));
      this._groupsImpl = new module.Groups(this);
      return this._groupsImpl;
    });
    return this._groupsLoading;
  }

  /**
   * The server took an outbox entry: it goes, and its message is 'sent'.
   * @param {OutboxEntry} entry
   * @param {unknown} serverTime
   */
  async _settle(entry, serverTime) {
    const update = await this._store.write(['outbox', 'messages'], async (t) => {
      await req(t.objectStore('outbox').delete(/** @type {number} */ (entry.id)));
      return entry.primary && entry.messageId !== null ? setStatus(t, entry.messageId, 'sent', serverTime) : null;
    });
    if (update) this._emit('status', update);
  }

  /**
   * The page's view of a stored message row whose text (and pointer) is known.
   * @param {any} row
   * @param {string | null} text
   * @param {Attachment | null} [pointer]
   */
  _publicMessage(row, text, pointer = null) {
    return publicMessage(row, text, pointer);
  }

  /** @param {OutboxEntry} entry */
  async _giveUp(entry) {
    const update = await this._store.write(['outbox', 'messages'], async (t) => {
      await req(t.objectStore('outbox').delete(/** @type {number} */ (entry.id)));
      return entry.primary && entry.messageId !== null ? setStatus(t, entry.messageId, 'failed') : null;
    });
    if (update) this._emit('status', update);
  }

  /**
   * Answer a DEVICE_MISMATCH: forget extra devices, restart sessions with stale ones,
   * start sessions with missing ones; keep every other ciphertext as it was. The corrected
   * payloads replace the outbox entry's in the transaction that stores the new sessions.
   * @param {OutboxEntry} entry
   * @param {Send} frame
   * @param {DeviceMismatch} mismatch
   */
  async _correctDevices(entry, frame, mismatch) {
    const recipient = frame.recipient;
    const store = this._store;
    const devices = await this._fetchDevices(recipient);
    const certificates = devices.certificates;
    const insisted = [...new Set([...mismatch.missing, ...mismatch.stale])].filter((id) => devices.refused.has(id)).sort((a, b) => a - b);
    if (insisted.length) {
      // The relay wants a ciphertext for a device the account never listed: that is the
      // attack the signed list exists for. Fail rather than go round again.
      throw new ClientError(
        'unsigned_device',
        `the server insists on ${recipient}'s device ${insisted.join(', ')}, which is ${devices.refused.get(insisted[0])}; not sending to it`,
      );
    }
    const stale = new Set(mismatch.stale);
    const wanted = new Map(
      [...new Set([...mismatch.missing, ...stale])]
        .sort((a, b) => a - b)
        .filter((id) => certificates.has(id)) // else the list changed again: the next round says
        .map((id) => [id, /** @type {DeviceCertificate} */ (certificates.get(id))]),
    );
    const bundles = await this._claimBundles(recipient, wanted, stale);
    const content = await store.unseal(entry.content, 'outbox');
    return this._exclusive(async () => {
      const now = this._clock();
      const cache = new Map();
      const fresh = await this._encryptFor({ username: recipient, certificates: wanted, bundles }, content, cache, stale);
      const sessions = await this._sealSessions(cache, now);
      const messages = [
        ...frame.messages.filter((m) => !mismatch.extra.includes(m.deviceId) && !stale.has(m.deviceId)),
        ...fresh,
      ].sort((a, b) => a.deviceId - b.deviceId);
      if (!messages.length) throw new ClientError('unknown_device', `${recipient} has no devices left`);
      entry.payloads = messages.map(({ deviceId, registrationId, payload }) => ({ deviceId, registrationId, payload }));
      await store.write(['outbox', 'sessions', 'peerDevices'], async (t) => {
        for (const id of [...mismatch.extra, ...stale]) await req(t.objectStore('sessions').delete([recipient, id]));
        for (const id of mismatch.extra) await req(t.objectStore('peerDevices').delete([recipient, id]));
        for (const row of sessions) await req(t.objectStore('sessions').put(row));
        for (const certificate of wanted.values()) {
          await req(t.objectStore('peerDevices').put(peerDeviceRow(recipient, certificate)));
        }
        const row = await req(t.objectStore('outbox').get(/** @type {number} */ (entry.id)));
        if (row) await req(t.objectStore('outbox').put({ ...row, payloads: entry.payloads }));
      });
      return new Send({ requestId: 0, recipient, messages, ...sendFlags(entry.ttlSeconds) });
    });
  }

  /**
   * The account's devices as the server shows them now, checked: its identity key against
   * the identity store, its signed device list against that key and against the newest
   * version seen (an older one is refused: invalid_value), each certificate against the
   * key and the list. The list is stored; devices no longer accepted are forgotten
   * (certificate and session); refused ones are reported ('device-refused') and never
   * encrypted to.
   * @param {string} username
   * @returns {Promise<CheckedDevices>}
   */
  async _fetchDevices(username) {
    const keys = await this._api.accountKeys(username);
    if (keys.username !== username) {
      throw new ClientError(LocalCode.BAD_RESPONSE, `asked for ${username}, got ${keys.username}`);
    }
    await this._checkIdentityForSending(username, keys.identityKey);
    const now = this._clock();
    const checked = await this._store.write(['deviceLists', 'peerDevices', 'sessions'], async (t) => {
      const lists = t.objectStore('deviceLists');
      const row = await req(lists.get(username));
      const newest = storedVersion(row, keys.identityKey);
      const checked = this._checkServed(username, keys, newest);
      // Not older than what we hold (checked): the newest seen from now on.
      const refused = [...checked.refused].map(([deviceId, reason]) => ({ deviceId, reason }));
      const version = checked.deviceList.version;
      await req(lists.put({ username, accountKey: keys.identityKey, version, list: checked.deviceList.encode(), refused, seenAt: now }));
      await forgetDevices(t, username, checked.certificates);
      return checked;
    });
    for (const [deviceId, reason] of checked.refused) {
      const key = `${username}\n${deviceId}\n${reason}`;
      if (this._reported.has(key)) continue;
      this._reported.add(key);
      this._emit('device-refused', { username, deviceId, reason });
    }
    return checked;
  }

  /**
   * Check what the server says `username`'s devices are against the account's signed
   * device list (protocol/devicelist.js checkDevices). Throws for a missing or forged
   * list, and for one older than `newestSeen`.
   * @param {string} username
   * @param {Awaited<ReturnType<Api['accountKeys']>>} keys
   * @param {import('../protocol/encoding.js').Uint64} newestSeen
   * @returns {CheckedDevices}
   */
  _checkServed(username, keys, newestSeen) {
    if (!keys.deviceList) {
      throw new ClientError(
        LocalCode.BAD_RESPONSE,
        `the server sent no signed device list for ${username}; nothing can be encrypted to devices the account does not vouch for`,
      );
    }
    let deviceList;
    try {
      deviceList = SignedDeviceList.decode(keys.deviceList);
    } catch (error) {
      if (error instanceof ProtocolError) throw ClientError.fromProtocol(error, `${username}'s device list`);
      throw error;
    }
    /** @type {Map<number, string>} */
    const refused = new Map();
    /** @type {DeviceCertificate[]} */
    const served = [];
    for (const entry of [...keys.devices].sort((a, b) => a.deviceId - b.deviceId)) {
      let certificate;
      try {
        certificate = DeviceCertificate.decode(entry.certificate);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw error;
        refused.set(entry.deviceId, 'served with a malformed certificate');
        continue;
      }
      if (certificate.deviceId !== entry.deviceId || certificate.registrationId !== entry.registrationId) {
        refused.set(entry.deviceId, `served with the certificate of device ${certificate.deviceId}`);
        continue;
      }
      served.push(certificate);
    }
    let checked;
    try {
      checked = checkDevices(keys.identityKey, username, deviceList, served, newestSeen);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      if (error.code === ErrorCode.INVALID_VALUE) {
        throw new ClientError(
          'invalid_value',
          `${error.detail}: the server is showing an old device list (a replay from before a change?); not sending to ${username}`,
        );
      }
      throw ClientError.fromProtocol(error, `${username}'s device list`);
    }
    for (const deviceId of checked.refused) {
      const certificate = /** @type {DeviceCertificate} */ (served.find((c) => c.deviceId === deviceId));
      let certified = true;
      try {
        certificate.verify(keys.identityKey);
      } catch {
        certified = false;
      }
      refused.set(deviceId, certified ? `not in ${username}'s signed device list` : `not certified by ${username}'s account key`);
    }
    const accepted = new Map(checked.accepted.map((c) => [c.deviceId, c]));
    const certificates = new Map(
      [...accepted].filter(([id]) => !(username === this.username && id === this.deviceId)),
    );
    return { deviceList, accepted, certificates, refused: new Map([...refused].sort((a, b) => a[0] - b[0])) };
  }

  /**
   * The devices to encrypt receipts to: those we know, if the newest signed list we hold
   * (for the account key we trust) names every one of them; else a fresh, checked fetch.
   * @param {string} peer
   * @returns {Promise<Map<number, DeviceCertificate>>}
   */
  async _knownDevices(peer) {
    const store = this._store;
    const known = new Map(
      (await store.getAll('peerDevices'))
        .filter((row) => row.username === peer)
        .map((row) => [row.deviceId, DeviceCertificate.decode(row.certificate)]),
    );
    const stored = await store.get('deviceLists', peer);
    const identity = await store.get('identities', peer);
    if (known.size && stored && identity && constantTimeEqual(stored.accountKey, identity.accountKey)) {
      const list = SignedDeviceList.decode(stored.list);
      if ([...known.values()].every((c) => list.admits(c))) return known;
    }
    return (await this._fetchDevices(peer)).certificates;
  }

  /**
   * @param {string} username
   * @param {Uint8Array} accountKey
   */
  async _checkIdentityForSending(username, accountKey) {
    if (username === this.username) {
      if (!constantTimeEqual(accountKey, this._own().accountKey)) {
        throw new ClientError('untrusted_identity', 'the server lists another identity key for your own account');
      }
      return;
    }
    if (accountKey.length !== 32) throw new ClientError('bad_key', `${username}'s identity key is not 32 bytes`);
    const now = this._clock();
    const { check, changed } = await this._store.write(['identities'], (t) => observeIdentity(t, username, accountKey, now));
    if (check === 'changed') this._emit('identity-changed', { username });
    if (changed) {
      throw new ClientError(
        'untrusted_identity',
        `${username}'s identity key has changed; compare safety numbers, then trust ${username} to send again`,
      );
    }
  }

  /**
   * @param {string} username
   * @param {DeviceCertificate} certificate
   */
  async _hasUsableSession(username, certificate) {
    const state = (await this._store.loadSession(username, certificate.deviceId))?.current;
    return Boolean(state?.canSend && constantTimeEqual(state.remoteIdentityKey, certificate.identityKey));
  }

  /**
   * Verified bundles for the devices without a usable session (and for `fresh`).
   * @param {string} username
   * @param {Map<number, DeviceCertificate>} certificates
   * @param {Set<number>} [fresh]
   */
  async _claimBundles(username, certificates, fresh = new Set()) {
    const needed = [];
    for (const [id, certificate] of certificates) {
      if (fresh.has(id) || !(await this._hasUsableSession(username, certificate))) needed.push(id);
    }
    /** @type {Map<number, PreKeyBundle>} */
    const bundles = new Map();
    if (!needed.length) return bundles;
    const claimed = await this._api.claimBundles(username, needed);
    const accountKey =
      username === this.username ? this._own().accountKey : (await this._store.get('identities', username))?.accountKey;
    for (const item of claimed.bundles) {
      const certificate = certificates.get(item.deviceId);
      if (!certificate) continue; // not asked for
      const where = `bundle for ${username} device ${item.deviceId}`;
      let bundle;
      try {
        bundle = PreKeyBundle.decode(item.bundle);
        bundle.verify();
      } catch (error) {
        if (error instanceof ProtocolError) throw ClientError.fromProtocol(error, where);
        throw error;
      }
      if (!accountKey || !constantTimeEqual(bundle.accountIdentityKey, accountKey)) {
        throw new ClientError('invalid_bundle', `${where}: another account key`);
      }
      if (!bytesEqual(bundle.certificate.encode(), certificate.encode())) {
        throw new ClientError('invalid_bundle', `${where}: not the certificate of the device list`);
      }
      bundles.set(item.deviceId, bundle);
    }
    const missing = needed.filter((id) => !bundles.has(id));
    if (missing.length) throw new ClientError('unknown_device', `no prekey bundle for ${username} device(s) ${missing}`);
    return bundles;
  }

  // --- receipts ---------------------------------------------------------------------

  /**
   * After each push: send the receipts owed once the push queue is momentarily empty (a
   * burst is over), or at once when a sender is owed a full receipt's worth.
   * @param {string} sender
   */
  _receiptsDue(sender) {
    const owed = (this._owed.get(sender) ?? 0) + 1;
    this._owed.set(sender, owed);
    if (!this._relay?.queuedPushes || owed >= MAX_RECEIPT_ITEMS) this._scheduleReceipts();
  }

  /** Start sending what `receipts` holds (or have the running flush go round again). */
  _scheduleReceipts() {
    this._owed.clear();
    if (this._flushingReceipts) {
      this._receiptsAgain = true;
      return;
    }
    if (this._receiptTimer !== undefined || !this._relay) return;
    this._receiptTimer = setTimeout(() => {
      this._receiptTimer = undefined;
      this._flushReceipts().catch((error) => this._emitError(error));
    }, this._receiptDelayMs);
  }

  /**
   * Send every receipt owed: per peer, one message per kind and 100 messages named.
   * Receipts to a peer whose identity key changed wait until trust(). A failure that may
   * pass (no connection, a busy server) keeps them owed; a refusal that will not (the
   * account is gone) drops them.
   */
  async _flushReceipts() {
    this._flushingReceipts = true;
    try {
      do {
        this._receiptsAgain = false;
        if (!this.receiptsEnabled) return;
        const peers = new Set((await this._store.getAll('receipts')).map((row) => row.peer));
        for (const peer of peers) {
          if ((await this._store.get('identities', peer))?.changed) continue;
          try {
            await this._sendReceipts(peer);
          } catch (error) {
            if (!receiptsMayWait(error)) {
              await this._store.write(['receipts'], async (t) => {
                for (const kind of KINDS) await req(t.objectStore('receipts').delete([peer, kind]));
              });
            }
            this._emitError(error);
          }
        }
      } while (this._receiptsAgain && this._relay);
    } finally {
      this._flushingReceipts = false;
    }
  }

  /**
   * Encrypt and send what `peer` is owed to `peer`'s devices only: the devices we know
   * (the relay corrects the list with DEVICE_MISMATCH, as for any send); only an account
   * we know no device of is looked up first. The receipts commit with their sessions,
   * their outbox entries and the deletion of what they cover in one transaction, so each
   * is encrypted exactly once.
   * @param {string} peer
   */
  async _sendReceipts(peer) {
    const store = this._store;
    const certificates = await this._knownDevices(peer);
    if (!certificates.size) throw new ClientError('unknown_device', `${peer} has no devices`);
    const target = { username: peer, certificates, bundles: await this._claimBundles(peer, certificates) };
    const entries = await this._exclusive(async () => {
      const now = this._clock();
      let sentAt = await this._nextSentAt(now);
      const cache = new Map();
      /** @type {[DeviceMessage[], Uint8Array][]} */
      const batches = [];
      for (const kind of KINDS) {
        const owed = (await store.get('receipts', [peer, kind]))?.sentAts ?? [];
        for (let i = 0; i < owed.length; i += MAX_RECEIPT_ITEMS, sentAt += 1) {
          const content = encodeContent(new Receipt(kind, owed.slice(i, i + MAX_RECEIPT_ITEMS), sentAt), true);
          batches.push([await this._encryptFor(target, content, cache), await store.seal(content, 'outbox')]);
        }
      }
      if (!batches.length) return [];
      const sessions = await this._sealSessions(cache, now);
      const lastSentAt = sentAt - 1;
      const written = await store.write(SENDING_STORES, async (t) => {
        await req(t.objectStore('config').put(lastSentAt, 'lastSentAt'));
        for (const kind of KINDS) await req(t.objectStore('receipts').delete([peer, kind]));
        const all = [];
        for (const [i, [payloads, content]] of batches.entries()) {
          all.push(...(await this._addOutbox(t, [target], [payloads], i ? [] : sessions, content, null, null, now)));
        }
        return all;
      });
      this._config.lastSentAt = lastSentAt;
      return written;
    });
    for (const entry of entries) await this._dispatch(entry);
  }

  /**
   * Mark `peer`'s conversation read: incoming messages become 'read' ('status' events)
   * and, with receipts on, a READ receipt goes to `peer`. Returns how many were marked.
   * @param {string} peer
   */
  async markRead(peer) {
    const group = isGroupPeer(peer);
    peer = group ? groupPeer(peer) : normalize(peer);
    const own = this.username;
    const receipts = this.receiptsEnabled && peer !== own && !group; // none for group messages yet
    const now = this._clock();
    const updates = await this._store.write(['messages', 'receipts'], async (t) => {
      const rows = await req(t.objectStore('messages').index('peer').getAll(peer));
      /** @type {{id: string, peer: string, status: string, expiresAt?: number}[]} */
      const updates = [];
      const sentAts = [];
      for (const row of rows) {
        if (row.direction !== 'in' || row.status !== 'received') continue;
        row.status = 'read';
        /** @type {{id: string, peer: string, status: string, expiresAt?: number}} */
        const update = { id: String(row.id), peer, status: 'read' };
        // Shown now: a disappearing message's clock starts.
        if (row.timerSeconds && typeof row.expiresAt !== 'number') update.expiresAt = row.expiresAt = now + row.timerSeconds * 1000;
        await req(t.objectStore('messages').put(row));
        updates.push(update);
        if (row.kind === 'text' || row.kind === 'attachment') sentAts.push(row.sentAt);
      }
      if (receipts && sentAts.length) await queueReceipt(t, peer, ReceiptKind.READ, sentAts);
      return updates;
    });
    for (const update of updates) this._emit('status', update);
    if (receipts && updates.length) this._scheduleReceipts();
    if (updates.some((update) => update.expiresAt)) this._scheduleExpiry();
    return updates.length;
  }

  /** @param {boolean} on send typing indicators, and show others' */
  async setTyping(on) {
    await this._setConfig({ typing: Boolean(on) });
  }

  /**
   * Tell `username` that we started (or stopped) typing: an EPHEMERAL send, which the
   * server never stores and passes only to their devices connected now (client/core.py
   * send_typing). Best effort: only devices we already have a session with get it, a
   * device mismatch is not corrected, and nothing is sent while typing indicators are
   * off or their identity key changed. Resolves to whether the server took it.
   * @param {string} username
   * @param {boolean} [started]
   */
  async sendTyping(username, started = true) {
    const peer = normalize(username);
    // Offline, it would go out late (after the reconnection): stale news, so not at all.
    if (!this.typingEnabled || peer === this.username || this._relay?.state !== 'online') return false;
    const identity = await this._store.get('identities', peer);
    if (!identity || identity.changed) return false;
    /** @type {Map<number, DeviceCertificate>} */
    const certificates = new Map();
    for (const row of await this._store.getAll('peerDevices')) {
      if (row.username !== peer) continue;
      const certificate = DeviceCertificate.decode(row.certificate);
      if (await this._hasUsableSession(peer, certificate)) certificates.set(row.deviceId, certificate);
    }
    if (!certificates.size) return false;
    const messages = await this._exclusive(async () => {
      const now = this._clock();
      const sentAt = await this._nextSentAt(now);
      const action = started ? TypingAction.STARTED : TypingAction.STOPPED;
      const cache = new Map();
      const content = encodeContent(new Typing(action, sentAt), true);
      const encrypted = await this._encryptFor({ username: peer, certificates, bundles: new Map() }, content, cache);
      const sessions = await this._sealSessions(cache, now);
      await this._store.write(['config', 'sessions'], async (t) => {
        await req(t.objectStore('config').put(sentAt, 'lastSentAt'));
        for (const row of sessions) await req(t.objectStore('sessions').put(row));
      });
      this._config.lastSentAt = sentAt;
      return encrypted;
    });
    const frame = new Send({ requestId: 0, recipient: peer, messages, flags: SendFlags.EPHEMERAL });
    try {
      const reply = await Promise.race([this._relayOrThrow().request(frame), pause(TYPING_TIMEOUT_MS).then(() => null)]);
      return reply instanceof SendOk;
    } catch {
      return false;
    }
  }

  // --- disappearing messages ---------------------------------------------------------

  /**
   * Delete the disappearing messages whose time is up, with any send of them still in the
   * outbox; 'expired' events ({peer, ids}) tell the page. Returns how many went.
   */
  async purgeExpired() {
    const now = this._clock();
    const gone = await this._store.write(['messages', 'outbox'], async (t) => {
      // Only disappearing messages whose clock runs are in this index: few rows.
      const index = t.objectStore('messages').index('expiresAt');
      const rows = (await req(index.getAll())).filter((row) => row.expiresAt <= now);
      if (!rows.length) return rows;
      const ids = new Set(rows.map((row) => row.id));
      for (const row of rows) await req(t.objectStore('messages').delete(row.id));
      for (const entry of await req(t.objectStore('outbox').getAll())) {
        if (ids.has(entry.messageId)) await req(t.objectStore('outbox').delete(entry.id));
      }
      return rows;
    });
    /** @type {Map<string, string[]>} */
    const byPeer = new Map();
    for (const row of gone) {
      byPeer.set(row.peer, [...(byPeer.get(row.peer) ?? []), String(row.id)]);
      this._localFiles.delete(String(row.id));
    }
    for (const [peer, ids] of byPeer) this._emit('expired', { peer, ids });
    return gone.length;
  }

  /** Purge what is due and set a timer for the next disappearing message. */
  _scheduleExpiry() {
    clearTimeout(this._expiryTimer);
    this._expiryTimer = undefined;
    (async () => {
      await this.purgeExpired();
      const next = await this._store.read(['messages'], async (t) => {
        const cursor = await req(t.objectStore('messages').index('expiresAt').openCursor());
        return cursor ? /** @type {number} */ (cursor.key) : null;
      });
      if (next === null || !this._relay) return;
      clearTimeout(this._expiryTimer);
      // At most a day at a time: setTimeout's range is about 24.8 days.
      const wait = Math.min(24 * 3600 * 1000, Math.max(0, next - this._clock()) + 50);
      this._expiryTimer = setTimeout(() => this._scheduleExpiry(), wait);
    })().catch((error) => this._emitError(error));
  }

  // --- attachments -----------------------------------------------------------------

  /**
   * The file of attachment message `id`: downloaded, checked against its pointer (digest,
   * length, every chunk's tag) and decrypted, as a Blob of its content type. One this page
   * sent, or already fetched, comes from memory. Throws ClientError decrypt_failed (the
   * blob was tampered with, truncated or substituted), attachment_expired or
   * unknown_attachment (gone from the server), unknown_message (no such attachment).
   * @param {string} id
   * @param {{onProgress?: (done: number, total: number) => void, signal?: AbortSignal}} [options]
   * @returns {Promise<Blob>}
   */
  async download(id, options = {}) {
    const held = this._localFiles.get(String(id));
    if (held) return held;
    const row = await this._store.get('messages', Number(id));
    if (!row || row.kind !== 'attachment') throw new ClientError('unknown_message', `no attachment ${id}`);
    const pointer = /** @type {Attachment} */ (decodeContent(await this._store.unseal(row.attachment, 'attachment')));
    let file = await downloadFile(this._api, pointer, options);
    if (file.size !== pointer.size) throw new ClientError('decrypt_failed', 'the attachment is not the size its pointer says');
    if (this._localFiles.size > 50) this._localFiles.delete(/** @type {string} */ (this._localFiles.keys().next().value));
    this._localFiles.set(String(id), file);
    return file;
  }

  /** @param {boolean} on */
  async setReceipts(on) {
    await this._setConfig({ receipts: Boolean(on) });
    if (!on) await this._store.write(['receipts'], (t) => req(t.objectStore('receipts').clear()));
  }

  // --- prekeys ----------------------------------------------------------------------

  async _maintainPrekeys() {
    const now = this._clock();
    await this._purgeRetired(now);
    const signed = (await this._store.getAll('prekeys')).filter((row) => row.kind === 'signed' && row.retiredAt === null);
    const newest = Math.max(0, ...signed.map((row) => row.createdAt));
    if (!signed.length || now - newest >= WEEK_MS) await this.rotatePrekeys();
    await this._topUp(false);
  }

  /**
   * Upload 100 one-time prekeys of each kind that runs low: below the server's low
   * watermark, or (`force`, after a PREKEYS_LOW notice) below 100, so that a second notice
   * already answered uploads nothing. Never past the server's maximum. One at a time.
   * @param {boolean} force
   */
  _topUp(force) {
    this._toppingUp ??= this._doTopUp(force).finally(() => {
      this._toppingUp = null;
    });
    return this._toppingUp;
  }

  /** @param {boolean} force */
  async _doTopUp(force) {
    const store = this._store;
    const counts = await this._api.prekeyCounts();
    const wanted = (/** @type {number} */ have) =>
      have >= (force ? PREKEY_BATCH : counts.lowWatermark) ? 0 : Math.max(0, Math.min(PREKEY_BATCH, counts.maxStored - have));
    const oneTimeIds = await store.reserveKeyIds('one_time', wanted(counts.oneTimePrekeys));
    const kemIds = await store.reserveKeyIds('kem', wanted(counts.kemPrekeys));
    if (!oneTimeIds.length && !kemIds.length) return;
    const device = this._own();
    const oneTime = await this._generate(oneTimeIds, (id) => OneTimePreKeyPair.generate(id));
    const kem = await this._generate(kemIds, (id) => KemPreKeyPair.generate(device, id, false));
    const now = this._clock();
    const rows = await Promise.all([
      ...oneTime.map((pair) => store.sealPrekey('one_time', pair.public.keyId, pair.privateKey)),
      ...kem.map((pair) => store.sealPrekey('kem', pair.public.keyId, pair.seed, { lastResort: false, createdAt: now })),
    ]);
    // Private halves first: the server may hand out a public half the moment it has it.
    await store.write(['prekeys'], async (t) => {
      for (const row of rows) await req(t.objectStore('prekeys').put(row));
    });
    try {
      await this._api.uploadPrekeys(
        oneTime.map((pair) => pair.public.encode()),
        kem.map((pair) => pair.public.encode()),
      );
    } catch (error) {
      if (refused(error)) {
        // The server certainly holds none of them.
        await store.write(['prekeys'], async (t) => {
          for (const row of rows) await req(t.objectStore('prekeys').delete([row.kind, row.keyId]));
        });
      }
      throw error;
    }
  }

  /**
   * Replace the signed prekey and the last-resort KEM prekey. The replaced private keys
   * stay 7 days, for PreKeyMessages made from a bundle claimed before the rotation.
   */
  async rotatePrekeys() {
    const store = this._store;
    const device = this._own();
    const [signedId] = await store.reserveKeyIds('signed', 1);
    const [kemId] = await store.reserveKeyIds('kem', 1);
    const signed = SignedPreKeyPair.generate(device, signedId);
    const lastResort = KemPreKeyPair.generate(device, kemId, true);
    const now = this._clock();
    const rows = await Promise.all([
      store.sealPrekey('signed', signedId, signed.privateKey, { createdAt: now }),
      store.sealPrekey('kem', kemId, lastResort.seed, { lastResort: true, createdAt: now }),
    ]);
    await store.write(['prekeys'], async (t) => {
      for (const row of rows) await req(t.objectStore('prekeys').put(row));
    });
    try {
      await this._api.putSignedPrekey(signed.public.encode());
    } catch (error) {
      if (refused(error)) await store.write(['prekeys'], (t) => req(t.objectStore('prekeys').delete(['signed', signedId])));
      throw error;
    }
    await this._retire((row) => row.kind === 'signed' && row.keyId !== signedId, now);
    await this._api.putLastResortKemPrekey(lastResort.public.encode());
    await this._retire((row) => row.kind === 'kem' && row.lastResort && row.keyId !== kemId, now);
  }

  /**
   * Start the 7 days of grace of the live prekeys `which` selects.
   * @param {(row: any) => boolean} which
   * @param {number} now
   */
  _retire(which, now) {
    return this._store.write(['prekeys'], async (t) => {
      const prekeys = t.objectStore('prekeys');
      for (const row of await req(prekeys.getAll())) {
        if (row.retiredAt === null && which(row)) await req(prekeys.put({ ...row, retiredAt: now }));
      }
    });
  }

  /** @param {number} now */
  _purgeRetired(now) {
    return this._store.write(['prekeys'], async (t) => {
      const prekeys = t.objectStore('prekeys');
      for (const row of await req(prekeys.getAll())) {
        if (row.retiredAt !== null && row.retiredAt < now - WEEK_MS) await req(prekeys.delete([row.kind, row.keyId]));
      }
    });
  }

  // --- identities -------------------------------------------------------------------

  /**
   * What this browser knows of `username`'s identity key (null: never seen).
   * @param {string} username
   * @returns {Promise<{accountKeyHex: string, changed: boolean, verified: boolean} | null>}
   */
  async identity(username) {
    const row = await this._store.get('identities', normalize(username));
    return row ? { accountKeyHex: toHex(row.accountKey), changed: row.changed, verified: row.verified } : null;
  }

  /**
   * The safety number with `username`, for comparing in person or by QR code. An account
   * never seen before is looked up on the server first (and its key stored, as on first
   * contact).
   * @param {string} username
   */
  async safetyNumber(username) {
    username = normalize(username);
    const device = this._own();
    if (username === this.username) {
      throw new ClientError('invalid_value', 'a safety number needs another account than your own');
    }
    let row = await this._store.get('identities', username);
    if (!row) {
      const keys = await this._api.accountKeys(username);
      if (keys.username !== username) {
        throw new ClientError(LocalCode.BAD_RESPONSE, `asked for ${username}, got ${keys.username}`);
      }
      await this._checkIdentityForSending(username, keys.identityKey); // first contact: stored
      row = await this._store.get('identities', username);
    }
    const number = safetyNumber(/** @type {string} */ (this.username), device.accountKey, username, row.accountKey);
    return { digits: number.digits, groups: number.groups(), qrPayload: number.qrPayload };
  }

  /**
   * Accept `username`'s current identity key: clears the changed flag, so sending to them
   * works again; `verified: true` also records that safety numbers matched.
   * @param {string} username
   * @param {{verified?: boolean}} [options]
   */
  async trust(username, { verified = false } = {}) {
    username = normalize(username);
    const known = await this._store.write(['identities'], async (t) => {
      const row = await req(t.objectStore('identities').get(username));
      if (row) await req(t.objectStore('identities').put({ ...row, changed: false, verified: verified || row.verified }));
      return Boolean(row);
    });
    if (!known) {
      throw new ClientError(
        'unknown_account',
        `no identity key on record for ${username}; send to them or look up the safety number first`,
      );
    }
    this._scheduleReceipts(); // receipts held back by the change
  }

  // --- history ----------------------------------------------------------------------

  /** @param {any} row */
  async _public(row) {
    const pointer = row.attachment ? /** @type {Attachment} */ (decodeContent(await this._store.unseal(row.attachment, 'attachment'))) : null;
    return publicMessage(row, row.text ? await this._store.unsealText(row.text, 'message') : null, pointer);
  }

  /**
   * Rows in the order a conversation shows them: history imported from our other device
   * first (it is older than anything this device received itself), in the order it came;
   * then everything else in the order it was stored.
   * @param {any[]} rows
   */
  _ordered(rows) {
    return [...rows.filter((row) => row.imported), ...rows.filter((row) => !row.imported)];
  }

  /**
   * The conversation with `peer`, oldest first.
   * @param {string} peer
   * @returns {Promise<Message[]>}
   */
  async messages(peer) {
    await this.purgeExpired();
    const key = isGroupPeer(peer) ? groupPeer(peer) : normalize(peer);
    const rows = await this._store.getAll('messages', { index: 'peer', query: key });
    return Promise.all(this._ordered(rows).map((row) => this._public(row)));
  }

  /**
   * Every conversation, the most recent first, with its last message and the number of
   * incoming messages not yet marked read; a group's (peer `group:<id>`) also has `group`.
   * @returns {Promise<{peer: string, lastMessage: Message, unread: number, group?: import('./group-client.js').GroupView}[]>}
   */
  async conversations() {
    await this.purgeExpired();
    /** @type {Map<string, {last: any, unread: number}>} */
    const byPeer = new Map();
    for (const row of this._ordered(await this._store.getAll('messages'))) {
      const entry = byPeer.get(row.peer) ?? { last: row, unread: 0 };
      entry.last = row;
      if (row.direction === 'in' && row.status === 'received') entry.unread += 1;
      byPeer.set(row.peer, entry);
    }
    // Live messages by arrival; a conversation of imported history only, by its clock.
    /** @param {any} row */
    const rank = (row) => (row.imported ? [0, Number(row.sentAt ?? 0)] : [1, row.id]);
    const sorted = [...byPeer].sort((a, b) => {
      const [x, y] = [rank(a[1].last), rank(b[1].last)];
      return y[0] - x[0] || y[1] - x[1];
    });
    const groups = new Map(
      (await this._store.getAll('groups')).map((g) => [GROUP_PEER + g.id, { id: g.id, name: g.name, timerSeconds: g.timerSeconds, members: g.members, admin: g.admin, member: g.member }]),
    );
    return Promise.all(
      sorted.map(async ([peer, { last, unread }]) => ({
        peer,
        lastMessage: await this._public(last),
        unread,
        ...(groups.has(peer) ? { group: groups.get(peer) } : {}),
      })),
    );
  }
}
