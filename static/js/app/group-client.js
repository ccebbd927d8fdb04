// @ts-check
/**
 * Groups in the web client (docs/protocol.md §17.1–17.4, §17.6; docs/api.md "Groups"),
 * with the wire behaviour of the Python reference client (client/groups.py), so that
 * browsers and the CLI share groups. `WebClient.groups` is a `Groups` bound to its client.
 *
 * - One encryption per group message: our own sending chain per group (`groups` row,
 *   sealed), given in SENDER_KEY contents over the pairwise sessions (the 1:1 machinery:
 *   signed device lists, sessions, DEVICE_MISMATCH correction, the outbox) to every other
 *   device of the roster, then one GROUP_SEND per message, fanned out by the relay.
 * - A GROUP_SEND names the digest of the roster our chain was reconciled with, never merely
 *   the newest seen. On `stale_roster` we fetch the roster and reconcile: a device that held
 *   our chain and left makes us draw a new chain for everyone remaining (a removed member
 *   reads nothing after); a device that joined gets the chain as it stands. The pending
 *   message is then encrypted again (at most three GROUP_SENDs per message).
 * - A GROUP_SEND is an outbox entry (`group` set): a reconnection resends the same bytes;
 *   the SENDER_KEY sends it depends on are earlier entries and go first.
 * - Receiving runs under the state lock, in the transaction that stores the message, before
 *   the ACK: the record of (group, sender, sender device) is decrypted and written with the
 *   message; a missing key stores an undecryptable row (no_session). A group first heard of
 *   is created locally and looked up on the server after the envelope is acknowledged.
 * - Membership comes from the server; the name and timer only from GROUP_UPDATE contents,
 *   which are also shown in the conversation ("alice added carol").
 *
 * A group's conversation is the messages whose peer is `group:<id>`; rows carry `sender`.
 */

// Loaded on first use (a chunk of its own in the browser, to keep the first load small),
// with the protocol and the client's helpers handed in by init(): one copy of each class,
// so that instanceof holds across the bundle and this chunk.
/** @typedef {typeof import('../protocol/index.js')} Protocol */
/** @typedef {Protocol & typeof import('./errors.js') & {req: typeof import('./store.js').req}} Deps */
/** @typedef {import('../protocol/index.js').GroupUpdate} GroupUpdateT */
/** @typedef {import('../protocol/index.js').RosterEntry} RosterEntryT */
let {
  Attachment, ErrorCode, ErrorFrame, Expiring, GroupAction, GroupSend, GroupUpdate, MAX_GROUP_NAME_BYTES,
  MAX_TEXT_BYTES, ProtocolError, RosterEntry, SendFlags, SendOk, SenderKeyDistribution, SenderKeyMessage,
  SenderKeyRecord, SenderKeyState, Text, bytesEqual, decodeContent, encodeContent, errorSlug, normalizeUsername,
  parseGroupId, rosterDigest, toHex, utf8Encode, ClientError, LocalCode, asClientError, req,
} = /** @type {Deps} */ (/** @type {unknown} */ ({})); // prettier-ignore

/**
 * Hand in what this module uses (see above); once, before anything else.
 * @param {Pick<Deps, 'Attachment' | 'ErrorCode' | 'ErrorFrame' | 'Expiring' | 'GroupAction' | 'GroupSend' |
 *   'GroupUpdate' | 'MAX_GROUP_NAME_BYTES' | 'MAX_TEXT_BYTES' | 'ProtocolError' | 'RosterEntry' | 'SendFlags' |
 *   'SendOk' | 'SenderKeyDistribution' | 'SenderKeyMessage' | 'SenderKeyRecord' | 'SenderKeyState' | 'Text' |
 *   'bytesEqual' | 'decodeContent' | 'encodeContent' | 'errorSlug' | 'normalizeUsername' | 'parseGroupId' |
 *   'rosterDigest' | 'toHex' | 'utf8Encode' | 'ClientError' | 'LocalCode' | 'asClientError' | 'req'>} deps
 */
export function init(deps) {
  ({
    Attachment, ErrorCode, ErrorFrame, Expiring, GroupAction, GroupSend, GroupUpdate, MAX_GROUP_NAME_BYTES,
    MAX_TEXT_BYTES, ProtocolError, RosterEntry, SendFlags, SendOk, SenderKeyDistribution, SenderKeyMessage,
    SenderKeyRecord, SenderKeyState, Text, bytesEqual, decodeContent, encodeContent, errorSlug, normalizeUsername,
    parseGroupId, rosterDigest, toHex, utf8Encode, ClientError, LocalCode, asClientError, req,
  } = deps); // prettier-ignore
}

export const GROUP_PEER = 'group:';
const MAX_ROSTER_ROUNDS = 3; // GROUP_SENDs of one message before giving up on a changing roster
const SENDER_KEY_BYTE = 0x13; // version 1, kind 3 (SenderKeyMessage)
const RECEIVE_STORES = ['messages', 'groups', 'senderKeys'];

/** @typedef {{username: string, admin: boolean}} Member */
/**
 * A group as this device knows it (what `list()` and `get()` return).
 * @typedef {{id: string, name: string, timerSeconds: number, members: Member[], admin: boolean,
 *   member: boolean}} GroupView
 */
/** @typedef {{id: string, groupId: Uint8Array, members: Member[], devices: RosterEntryT[], rosterDigest: Uint8Array}} GroupInfo */

/** @param {Uint8Array} payload */
export const isGroupPayload = (payload) => payload[0] === SENDER_KEY_BYTE;

/** @param {string} peer */
export const isGroupPeer = (peer) => typeof peer === 'string' && peer.startsWith(GROUP_PEER);

/** @param {string} id */
const peerOf = (id) => GROUP_PEER + id;

/** @param {RosterEntryT | {username: string, deviceId: number, registrationId: number}} e */
const tag = (e) => `${e.username}\n${e.deviceId}\n${e.registrationId}`;

/** @param {string} hex */
const ownKeyLabel = (hex) => `group:${hex}:ownKey`;

/**
 * @param {string} hex
 * @param {string} sender
 * @param {number} device
 */
const recordLabel = (hex, sender, device) => `senderKey:${hex}:${sender}:${device}`;

/**
 * The group's id as 32 hex digits (also accepts `group:<id>` and the 16 bytes).
 * @param {string | Uint8Array} group
 */
export function groupHex(group) {
  try {
    if (group instanceof Uint8Array) return toHex(parseGroupId(toHex(group)));
    const text = String(group).trim();
    return toHex(parseGroupId(isGroupPeer(text) ? text.slice(GROUP_PEER.length) : text));
  } catch (error) {
    throw asClientError(error);
  }
}

/**
 * What a GROUP_UPDATE looks like in the conversation (client/groups.py describe_update).
 * @param {string} actor
 * @param {number} action
 * @param {string} name
 * @param {readonly string[]} targets
 */
export function describeUpdate(actor, action, name, targets) {
  const who = targets.join(', ');
  switch (action) {
    case GroupAction.CREATED:
      return `${actor} created the group “${name}”` + (who ? ` with ${who}` : '');
    case GroupAction.MEMBERS_ADDED:
      return `${actor} added ${who}`;
    case GroupAction.MEMBERS_REMOVED:
      return `${actor} removed ${who}`;
    case GroupAction.LEFT:
      return `${actor} left`;
    case GroupAction.RENAMED:
      return `${actor} renamed the group to “${name}”`;
    case GroupAction.ADMINS_CHANGED:
      return `${actor} changed the admins: ${who}`;
    default:
      return `${actor} added you to “${name}”`;
  }
}

/**
 * Check the shape of a group as the API returns it.
 * @param {any} data
 * @returns {GroupInfo}
 */
function parseInfo(data) {
  const bad = (/** @type {string} */ why) => new ClientError(LocalCode.BAD_RESPONSE, `a group from the server: ${why}`);
  if (!data || typeof data !== 'object' || !Array.isArray(data.members) || !Array.isArray(data.devices)) throw bad('malformed');
  let groupId;
  try {
    groupId = parseGroupId(data.id);
  } catch {
    throw bad('a malformed id');
  }
  const digest = typeof data.roster_digest === 'string' && /^[0-9a-f]{32}$/.test(data.roster_digest) ? data.roster_digest : null;
  if (!digest) throw bad('a malformed roster digest');
  return {
    id: toHex(groupId),
    groupId,
    members: data.members.map((/** @type {any} */ m) => ({ username: String(m.username), admin: Boolean(m.admin) })),
    devices: data.devices.map((/** @type {any} */ d) => new RosterEntry(String(d.username), Number(d.device_id), Number(d.registration_id))),
    rosterDigest: parseGroupId(digest), // 16 bytes written as 32 hex digits, like an id
  };
}

/** @param {string} name */
function checkName(name) {
  const trimmed = String(name ?? '').trim();
  if (!trimmed) throw new ClientError('invalid_value', 'the group name is empty');
  const size = utf8Encode(trimmed).length;
  if (size > MAX_GROUP_NAME_BYTES) throw new ClientError('too_large', `the group name is ${size} bytes; the limit is ${MAX_GROUP_NAME_BYTES}`);
  return trimmed;
}

/** @param {Iterable<string>} names */
function usernames(names) {
  try {
    return [...new Set([...names].map((n) => String(n).trim()).filter(Boolean).map((n) => normalizeUsername(n)))];
  } catch (error) {
    throw asClientError(error);
  }
}

/**
 * @param {string} id
 * @param {number} now
 */
function newRow(id, now) {
  return {
    id,
    name: '',
    timerSeconds: 0,
    members: /** @type {Member[]} */ ([]),
    admin: false,
    member: true,
    needsFetch: true,
    roster: null,
    rosterDigest: /** @type {Uint8Array | null} */ (null),
    ownKey: /** @type {Uint8Array | null} */ (null),
    keyRecipients: /** @type {string[]} */ ([]),
    createdAt: now,
  };
}

/** @param {any} row @returns {GroupView} */
const view = (row) => ({
  id: row.id,
  name: row.name,
  timerSeconds: row.timerSeconds,
  members: row.members,
  admin: row.admin,
  member: row.member,
});

export class Groups {
  /** @param {import('./client.js').WebClient} client */
  constructor(client) {
    this._c = client;
    /** @type {Promise<unknown>} group sends and their key distribution, one at a time */
    this._lock = Promise.resolve();
    this._fetchDue = true;
  }

  /**
   * @template T
   * @param {() => Promise<T>} fn
   * @returns {Promise<T>}
   */
  _serial(fn) {
    const run = this._lock.then(fn);
    this._lock = run.catch(() => {});
    return run;
  }

  get _store() {
    return this._c._store;
  }

  // --- what we know ----------------------------------------------------------------------

  /** Every group this device knows of (left ones included), oldest first. */
  async list() {
    const rows = await this._store.getAll('groups');
    return rows.sort((a, b) => a.createdAt - b.createdAt).map(view);
  }

  /**
   * The group, or null if this device has not heard of it.
   * @param {string} group
   * @returns {Promise<GroupView | null>}
   */
  async get(group) {
    const row = await this._store.get('groups', groupHex(group));
    return row ? view(row) : null;
  }

  /**
   * The group as the server shows it now; refreshes the member list.
   * @param {string} group
   */
  async fetch(group) {
    const info = await this._info(groupHex(group));
    await this._saveMembers(info);
    return (/** @type {GroupView} */ (await this.get(info.id)));
  }

  // --- management ------------------------------------------------------------------------

  /**
   * Create a group of this account (its admin) and `members`; returns its id. Every
   * member (and our other devices) gets a GROUP_UPDATE "created" pairwise, with our key.
   * @param {string} name
   * @param {Iterable<string>} members
   */
  async create(name, members) {
    const c = this._c;
    const title = checkName(name);
    const names = usernames(members).filter((u) => u !== c.username);
    await c.connect();
    return this._serial(async () => {
      const info = parseInfo(await c._api.request('POST', '/api/v1/groups', { members: names }));
      const now = c._clock();
      await this._store.write(['groups'], async (t) => {
        const row = { ...newRow(info.id, now), name: title, needsFetch: false };
        await req(t.objectStore('groups').put(row));
      });
      await this._saveMembers(info);
      const created = encodeContent(await this._ownUpdate(info.id, GroupAction.CREATED, title, names), true);
      await this._reconcile(info.id, info, new Map(info.members.map((m) => [m.username, [created]])));
      this._c._emit('group', { id: info.id });
      return info.id;
    });
  }

  /**
   * Add members (admins only); returns those that were not in the group. They get a
   * snapshot and our key pairwise, then everyone gets "added" as a group message.
   * @param {string} group
   * @param {Iterable<string>} names
   */
  async add(group, names) {
    const c = this._c;
    const hex = groupHex(group);
    const wanted = usernames(names);
    if (!wanted.length) throw new ClientError('invalid_value', 'name at least one account to add');
    await c.connect();
    return this._serial(async () => {
      const row = await this._member(hex);
      const before = new Set(row.members.map((/** @type {Member} */ m) => m.username));
      const info = parseInfo(await this._request('POST', `/api/v1/groups/${hex}/members`, { add: wanted }, hex));
      await this._saveMembers(info);
      const inGroup = new Set(info.members.map((m) => m.username));
      const added = wanted.filter((u) => inGroup.has(u) && !before.has(u));
      if (!added.length) return [];
      const sentAt = await this._sentAt();
      const snapshot = new GroupUpdate(info.groupId, GroupAction.SNAPSHOT, row.name, row.timerSeconds, [...inGroup], sentAt);
      await this._reconcile(hex, info, new Map(added.map((u) => [u, [encodeContent(snapshot, true)]])));
      const update = await this._ownUpdate(hex, GroupAction.MEMBERS_ADDED, '', added);
      await this._send(hex, async () => ({ content: encodeContent(update, true), row: null }));
      return added;
    });
  }

  /**
   * Remove a member (admins only), or leave when it is us. Our key is replaced before
   * anything else is sent: "removed" goes under the new key, and pairwise to the removed.
   * @param {string} group
   * @param {string} username
   */
  async remove(group, username) {
    const c = this._c;
    const hex = groupHex(group);
    const [target] = usernames([username]);
    if (target === c.username) return this.leave(hex);
    await c.connect();
    return this._serial(async () => {
      await this._member(hex);
      const info = parseInfo(await this._request('DELETE', `/api/v1/groups/${hex}/members/${encodeURIComponent(target)}`, undefined, hex));
      await this._saveMembers(info);
      const content = encodeContent(await this._ownUpdate(hex, GroupAction.MEMBERS_REMOVED, '', [target]), true);
      await this._reconcile(hex, info, new Map([[target, [content]]]));
      await this._send(hex, async () => ({ content, row: null }));
    });
  }

  /**
   * Leave: tell the members ("left", a group message), then leave on the server.
   * @param {string} group
   */
  async leave(group) {
    const c = this._c;
    const hex = groupHex(group);
    await c.connect();
    return this._serial(async () => {
      await this._member(hex);
      try {
        const content = encodeContent(await this._ownUpdate(hex, GroupAction.LEFT, '', []), true);
        await this._send(hex, async () => ({ content, row: null }));
      } catch (error) {
        c._emitError(error); // leaving must not depend on telling them
      }
      await this._request('DELETE', `/api/v1/groups/${hex}/members/${encodeURIComponent(/** @type {string} */ (c.username))}`, undefined, hex);
      await this._update(hex, (row) => ({ ...row, member: false, ownKey: null, keyRecipients: [] }));
      c._emit('group', { id: hex });
    });
  }

  /**
   * Rename the group (any member; the server never learns the name).
   * @param {string} group
   * @param {string} name
   */
  async rename(group, name) {
    const c = this._c;
    const hex = groupHex(group);
    const title = checkName(name);
    await c.connect();
    return this._serial(async () => {
      await this._member(hex);
      const content = encodeContent(await this._ownUpdate(hex, GroupAction.RENAMED, title, []), true);
      await this._send(hex, async () => ({ content, row: null }));
      await this._update(hex, (row) => ({ ...row, name: title }));
      c._emit('group', { id: hex });
    });
  }

  // --- sending ---------------------------------------------------------------------------

  /**
   * Send `text` to the group in one GROUP_SEND; the Message once the relay accepted it.
   * @param {string} group
   * @param {string} text
   */
  async sendText(group, text) {
    const hex = groupHex(group);
    if (typeof text !== 'string' || !text) throw new ClientError('invalid_value', 'the message text is empty');
    const size = utf8Encode(text).length;
    if (size > MAX_TEXT_BYTES) throw new ClientError('too_large', `the message is ${size} bytes; the limit is ${MAX_TEXT_BYTES}`);
    await this._c.connect();
    const sealed = await this._store.sealText(text, 'message');
    const id = await this._serial(() =>
      this._send(hex, async (sentAt, timer) => ({
        content: encodeContent(timer ? new Expiring(timer, new Text(text, sentAt), sentAt) : new Text(text, sentAt), true),
        row: { kind: 'text', text: sealed },
      })),
    );
    return this._c._public(await this._store.get('messages', /** @type {number} */ (id)));
  }

  /**
   * Encrypt what `make(sentAt, timer)` builds under our chain and queue the GROUP_SEND,
   * storing `row` (a message of ours, if any) in the same transaction; then send it.
   * Reconciles first when our chain has not reached the roster we know. Runs serialised.
   * @param {string} hex
   * @param {(sentAt: number, timer: number) => Promise<{content: Uint8Array, row: Record<string, unknown> | null}>} make
   * @returns {Promise<number | null>} the message id
   */
  async _send(hex, make) {
    const c = this._c;
    const row = await this._member(hex);
    const others = new Set((row.roster ?? []).filter((/** @type {any} */ e) => !this._isMe(e)).map(tag));
    const holders = new Set(row.keyRecipients);
    if (!row.rosterDigest || !row.ownKey || [...others].some((e) => !holders.has(e))) await this._reconcile(hex);
    const { entry, message } = await c._exclusive(async () => {
      const now = c._clock();
      const sentAt = await c._nextSentAt(now);
      const group = await this._store.get('groups', hex);
      const timer = group.timerSeconds || 0;
      const { content, row: fields } = await make(sentAt, timer);
      const sealedContent = await this._store.seal(content, 'outbox');
      const [payload, ownKey] = await this._encrypt(group, content);
      return this._store.write(['config', 'messages', 'outbox', 'groups'], async (t) => {
        await req(t.objectStore('config').put(sentAt, 'lastSentAt'));
        const fresh = await req(t.objectStore('groups').get(hex));
        await req(t.objectStore('groups').put({ ...fresh, ownKey }));
        let messageId = null;
        let message = null;
        if (fields) {
          message = {
            direction: 'out', peer: peerOf(hex), sender: c.username, senderDevice: c.deviceId, text: null, code: null,
            sentAt, serverTime: null, receivedAt: null, status: 'pending', seq: null, ...fields,
            ...(timer ? { timerSeconds: timer, expiresAt: sentAt + timer * 1000 } : {}),
          }; // prettier-ignore
          messageId = /** @type {number} */ (await req(t.objectStore('messages').add(message)));
          message = { ...message, id: messageId };
        }
        const entry = {
          messageId, recipient: peerOf(hex), primary: true, group: hex, groupId: parseGroupId(hex), content: sealedContent,
          payload, rosterDigest: group.rosterDigest, payloads: [], createdAt: now, ttlSeconds: timer || null,
        }; // prettier-ignore
        /** @type {any} */ (entry).id = await req(t.objectStore('outbox').add(entry));
        return { entry, message };
      });
    });
    c._config.lastSentAt = Math.max(c._config.lastSentAt ?? 0, message?.sentAt ?? 0);
    if (message) c._emit('message', { message: await c._public(message) });
    await this.dispatch(/** @type {any} */ (entry));
    return message ? message.id : null;
  }

  /**
   * Encrypt `content` under our chain of `group` (a row); the payload and the advanced
   * chain, sealed, to store with it.
   * @param {any} group
   * @param {Uint8Array} content
   */
  async _encrypt(group, content) {
    if (!group.ownKey) throw new ClientError('stale_roster', `group ${group.id} has no sender key of ours`);
    const record = SenderKeyRecord.decode(await this._store.unseal(group.ownKey, ownKeyLabel(group.id)));
    const state = record.states[0];
    let payload;
    try {
      payload = state.encrypt(parseGroupId(group.id), content);
    } catch (error) {
      if (error instanceof ProtocolError) throw ClientError.fromProtocol(error, `group ${group.id}`);
      throw error;
    }
    return /** @type {[Uint8Array, Uint8Array]} */ ([payload, await this._store.seal(record.encode(), ownKeyLabel(group.id))]);
  }

  /**
   * Send one outbox GROUP_SEND until the relay takes it; on stale_roster reconcile and
   * encrypt again (at most MAX_ROSTER_ROUNDS sends). WebClient routes group entries here.
   * @param {any} entry
   */
  async dispatch(entry) {
    const c = this._c;
    const hex = entry.group;
    for (let attempt = 1; attempt <= MAX_ROSTER_ROUNDS; attempt++) {
      const flags = entry.ttlSeconds ? { flags: SendFlags.EXPIRES, ttlSeconds: entry.ttlSeconds } : {};
      const frame = new GroupSend({ requestId: 0, groupId: entry.groupId, rosterDigest: entry.rosterDigest, payload: entry.payload, ...flags });
      const reply = await c._relayOrThrow().request(frame);
      if (reply instanceof SendOk) {
        await c._settle(entry, reply.serverTimeMs);
        return;
      }
      const code = reply instanceof ErrorFrame ? reply.code : null;
      if (code === ErrorCode.STALE_ROSTER && attempt < MAX_ROSTER_ROUNDS) {
        try {
          await this._reconcile(hex);
          entry = await this._requeue(entry);
        } catch (error) {
          await c._giveUp(entry);
          throw error;
        }
        continue;
      }
      if (code === ErrorCode.STALE_ROSTER) break;
      await c._giveUp(entry);
      if (code === ErrorCode.NOT_A_MEMBER || code === ErrorCode.UNKNOWN_GROUP) {
        await this._update(hex, (row) => ({ ...row, member: false }));
      }
      const slug = typeof code === 'number' ? errorSlug(code) : undefined;
      const message = reply instanceof ErrorFrame ? reply.message : 'the relay answered a GROUP_SEND with DEVICE_MISMATCH';
      throw new ClientError(slug ?? LocalCode.BAD_RESPONSE, `group ${hex}: ${message}`);
    }
    await c._giveUp(entry);
    throw new ClientError('stale_roster', `the devices of group ${hex} kept changing; gave up after ${MAX_ROSTER_ROUNDS} attempts`);
  }

  /**
   * Encrypt an outbox entry's content again under the current chain and roster.
   * @param {any} entry
   */
  _requeue(entry) {
    const c = this._c;
    return c._exclusive(async () => {
      const group = await this._store.get('groups', entry.group);
      const content = await this._store.unseal(entry.content, 'outbox');
      const [payload, ownKey] = await this._encrypt(group, content);
      const next = { ...entry, payload, rosterDigest: group.rosterDigest };
      await this._store.write(['outbox', 'groups'], async (t) => {
        const fresh = await req(t.objectStore('groups').get(entry.group));
        await req(t.objectStore('groups').put({ ...fresh, ownKey }));
        await req(t.objectStore('outbox').put(next));
      });
      return next;
    });
  }

  /**
   * Bring our chain to the group's roster (`info`, else fetched now): a new chain if a
   * device that held ours left; the chain to every device that lacks it; `extra` contents
   * go pairwise to the named accounts in the same sends. Saves the roster our GROUP_SENDs
   * name. An account we cannot send to is skipped (reported) and retried next time.
   * @param {string} hex
   * @param {GroupInfo | null} [info]
   * @param {Map<string, Uint8Array[]>} [extra]
   */
  async _reconcile(hex, info = null, extra = new Map()) {
    const c = this._c;
    const store = this._store;
    info ??= await this._info(hex);
    let digest;
    try {
      digest = rosterDigest(info.devices);
    } catch (error) {
      throw new ClientError(LocalCode.BAD_RESPONSE, `group ${hex}: the roster: ${asClientError(error).message}`);
    }
    if (!bytesEqual(digest, info.rosterDigest)) {
      throw new ClientError(LocalCode.BAD_RESPONSE, `group ${hex}: the server's roster digest is not the digest of its roster`);
    }
    const others = info.devices.filter((e) => !this._isMe(e));
    const present = new Set(others.map(tag));
    const row = (await store.get('groups', hex)) ?? newRow(hex, c._clock());
    let holders = new Set(/** @type {string[]} */ (row.keyRecipients));
    let record = row.ownKey ? SenderKeyRecord.decode(await store.unseal(row.ownKey, ownKeyLabel(hex))) : null;
    if (!record || [...holders].some((h) => !present.has(h))) {
      record = new SenderKeyRecord([SenderKeyState.generate()]);
      holders = new Set();
      const ownKey = await store.seal(record.encode(), ownKeyLabel(hex));
      // Kept before it is given to anyone: a chain handed out must never be drawn again.
      await this._update(hex, (r) => ({ ...r, ownKey, keyRecipients: [] }));
    }
    /** @type {Map<string, RosterEntryT[]>} */
    const needing = new Map();
    for (const e of others) if (!holders.has(tag(e))) needing.set(e.username, [...(needing.get(e.username) ?? []), e]);
    const keyContent = needing.size ? encodeContent(record.states[0].distribution(info.groupId, await this._sentAt()), true) : null;
    for (const username of [...new Set([...needing.keys(), ...extra.keys()])].sort()) {
      const contents = [...(extra.get(username) ?? [])];
      if (needing.has(username) && keyContent) contents.push(keyContent);
      let given;
      try {
        given = await this._sendPairwise(username, contents);
      } catch (error) {
        if (error instanceof ClientError && error.code === LocalCode.CLOSED) throw error;
        c._emitError(new ClientError(asClientError(error).code, `group ${hex}: nothing sent to ${username}: ${asClientError(error).message}`));
        continue;
      }
      for (const e of needing.get(username) ?? []) if (given.has(`${e.deviceId}\n${e.registrationId}`)) holders.add(tag(e));
    }
    const roster = info.devices.map(({ username, deviceId, registrationId }) => ({ username, deviceId, registrationId }));
    await this._update(hex, (r) => ({ ...r, roster, rosterDigest: digest, keyRecipients: [...holders] }));
    await this._saveMembers(info);
  }

  /**
   * Send each content to every device of `username` (our other devices when it is us)
   * over the pairwise sessions, through the outbox, in order. Returns the devices
   * addressed as "deviceId\nregistrationId".
   * @param {string} username
   * @param {Uint8Array[]} contents
   */
  async _sendPairwise(username, contents) {
    const c = this._c;
    const devices = await c._fetchDevices(username);
    const certificates = devices.certificates;
    if (!certificates.size) {
      if (username === c.username) return new Set();
      throw new ClientError('unknown_device', `${username} has no devices to send to`);
    }
    const bundles = await c._claimBundles(username, certificates);
    const target = { username, certificates, bundles };
    const entries = await c._exclusive(async () => {
      const now = c._clock();
      const cache = new Map();
      /** @type {import('../protocol/frames.js').DeviceMessage[][]} */
      const payloads = [];
      /** @type {Uint8Array[]} */
      const sealed = [];
      for (const content of contents) {
        payloads.push(await c._encryptFor(target, content, cache)); // later ones reuse the sessions
        sealed.push(await this._store.seal(content, 'outbox'));
      }
      const sessions = await c._sealSessions(cache, now);
      return this._store.write(['outbox', 'sessions', 'peerDevices'], async (t) => {
        const out = [];
        for (const [i, p] of payloads.entries()) {
          out.push(...(await c._addOutbox(t, [target], [p], i ? [] : sessions, [sealed[i]], null, username, now)));
        }
        return out;
      });
    });
    for (const entry of entries) await c._dispatch(entry);
    return new Set([...certificates.values()].map((cert) => `${cert.deviceId}\n${cert.registrationId}`));
  }

  /**
   * A GROUP_UPDATE of ours, also recorded in our own conversation.
   * @param {string} hex
   * @param {number} action
   * @param {string} name
   * @param {string[]} targets
   */
  async _ownUpdate(hex, action, name, targets) {
    const c = this._c;
    const group = await this._store.get('groups', hex);
    const sentAt = await this._sentAt();
    const update = new GroupUpdate(parseGroupId(hex), action, name || group?.name || '', group?.timerSeconds ?? 0, targets, sentAt);
    const own = /** @type {string} */ (c.username);
    const device = /** @type {number} */ (c.deviceId);
    const text = await this._store.sealText(describeUpdate(own, action, update.name, targets), 'message');
    const message = await this._store.write(['messages'], async (t) => {
      const row = { ...this._eventRow(hex, own, device, 'out', sentAt, null, null, c._clock()), text };
      return { ...row, id: await req(t.objectStore('messages').add(row)) };
    });
    c._emit('message', { message: await c._public(message) });
    return update;
  }

  /** A sent_at above every earlier one of ours, taken (so the next is later still). */
  async _sentAt() {
    const c = this._c;
    const sentAt = await c._nextSentAt(c._clock());
    await this._store.write(['config'], (t) => req(t.objectStore('config').put(sentAt, 'lastSentAt')));
    c._config.lastSentAt = sentAt;
    return sentAt;
  }

  // --- receiving (under the state lock) -----------------------------------------------

  /**
   * A DELIVER whose payload is a SenderKeyMessage: decrypt with the sender device's record,
   * and store the record with the message in one transaction. The events to emit.
   * @param {import('../protocol/frames.js').Deliver} frame
   * @returns {Promise<[string, unknown][]>}
   */
  async receive(frame) {
    const c = this._c;
    const store = this._store;
    const { sender, senderDevice } = frame;
    const now = c._clock();
    let message;
    try {
      message = SenderKeyMessage.decode(frame.payload);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      return store.write(['messages'], (t) => c._addUndecryptable(t, frame, error.code, now));
    }
    const hex = toHex(message.groupId);
    const label = recordLabel(hex, sender, senderDevice);
    const stored = await store.get('senderKeys', [hex, sender, senderDevice]);
    const record = stored ? SenderKeyRecord.decode(await store.unseal(stored.record, label)) : new SenderKeyRecord();
    /** @type {number | null} */
    let failure = null;
    let content = null;
    let sealedRecord = null;
    try {
      const padded = record.decrypt(message); // the record changes only if this succeeds
      sealedRecord = await store.seal(record.encode(), label);
      content = decodeContent(padded);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      if (error.code === ErrorCode.DUPLICATE_MESSAGE) return [];
      if (error.code !== ErrorCode.UNKNOWN_TYPE) failure = error.code; // a newer client's content: dropped
    }
    let timer = 0;
    if (content instanceof Expiring) [content, timer] = [content.inner, content.timerSeconds];
    const own = sender === c.username;
    const prepared = await this._prepare(content, hex, sender);
    return store.write(RECEIVE_STORES, async (t) => {
      /** @type {[string, unknown][]} */
      const events = [];
      await this._heardOf(t, hex, now);
      if (sealedRecord) await req(t.objectStore('senderKeys').put({ group: hex, sender, deviceId: senderDevice, record: sealedRecord, updatedAt: now }));
      if (failure !== null) return this._undecryptable(t, frame, hex, failure, now);
      if (content instanceof Text || content instanceof Attachment) {
        const row = {
          kind: content instanceof Text ? 'text' : 'attachment', direction: own ? 'out' : 'in', peer: peerOf(hex), sender,
          senderDevice, text: prepared.text, attachment: prepared.attachment, code: null, sentAt: content.sentAtMs,
          serverTime: frame.serverTimeMs, receivedAt: now, status: own ? 'sent' : 'received', seq: frame.seq,
          ...(timer ? { timerSeconds: timer, ...(own ? { expiresAt: Number(content.sentAtMs) + timer * 1000 } : {}) } : {}),
        }; // prettier-ignore
        const id = await req(t.objectStore('messages').add(row));
        const pointer = content instanceof Attachment ? content : null;
        events.push(['message', { message: c._publicMessage({ ...row, id }, content instanceof Text ? content.body : null, pointer) }]);
      } else if (content instanceof GroupUpdate && toHex(content.groupId) === hex) {
        events.push(...(await this._applyUpdate(t, sender, senderDevice, content, prepared.text, frame, now)));
      }
      return events;
    });
  }

  /**
   * Seal, before the transaction, what a group content stores: its text (a TEXT's body,
   * a GROUP_UPDATE's description) or an attachment's pointer.
   * @param {unknown} content
   * @param {string} hex
   * @param {string} sender
   */
  async _prepare(content, hex, sender) {
    const store = this._store;
    let text = null;
    let attachment = null;
    if (content instanceof Text) text = await store.sealText(content.body, 'message');
    if (content instanceof Attachment) attachment = await store.seal(encodeContent(content), 'attachment');
    if (content instanceof GroupUpdate && toHex(content.groupId) === hex) {
      text = await store.sealText(describeUpdate(sender, content.action, content.name, content.targets), 'message');
    }
    return { text, attachment };
  }

  /**
   * What a SENDER_KEY or GROUP_UPDATE that came over a pairwise session needs computed
   * before its transaction (null: nothing to do).
   * @param {unknown} content
   * @param {string} sender
   * @param {number} device
   */
  async preparePairwise(content, sender, device) {
    if (content instanceof SenderKeyDistribution) {
      const hex = toHex(content.groupId);
      const label = recordLabel(hex, sender, device);
      const stored = await this._store.get('senderKeys', [hex, sender, device]);
      const record = stored ? SenderKeyRecord.decode(await this._store.unseal(stored.record, label)) : new SenderKeyRecord();
      try {
        record.processDistribution(content);
      } catch (error) {
        if (error instanceof ProtocolError) return null; // a bad key: ignored, as client/groups.py
        throw error;
      }
      return { hex, content, sealed: await this._store.seal(record.encode(), label) };
    }
    if (content instanceof GroupUpdate) {
      const hex = toHex(content.groupId);
      return { hex, content, sealed: (await this._prepare(content, hex, sender)).text };
    }
    return null;
  }

  /**
   * Store what preparePairwise() made, in the envelope's transaction.
   * @param {IDBTransaction} t
   * @param {{hex: string, content: unknown, sealed: Uint8Array | null}} prepared
   * @param {import('../protocol/frames.js').Deliver} frame
   * @param {number} now
   * @returns {Promise<[string, unknown][]>}
   */
  async takePairwise(t, prepared, frame, now) {
    const { hex, content, sealed } = prepared;
    await this._heardOf(t, hex, now);
    if (content instanceof SenderKeyDistribution) {
      const row = { group: hex, sender: frame.sender, deviceId: frame.senderDevice, record: sealed, updatedAt: now };
      await req(t.objectStore('senderKeys').put(row));
      return [];
    }
    return this._applyUpdate(t, frame.sender, frame.senderDevice, /** @type {GroupUpdateT} */ (content), sealed, frame, now);
  }

  /**
   * @param {IDBTransaction} t
   * @param {string} hex
   * @param {number} now
   */
  async _heardOf(t, hex, now) {
    const groups = t.objectStore('groups');
    if (await req(groups.get(hex))) return;
    await req(groups.put(newRow(hex, now)));
    this._fetchDue = true;
  }

  /**
   * Apply a member's GROUP_UPDATE (name, timer, member list) and show it.
   * @param {IDBTransaction} t
   * @param {string} sender
   * @param {number} device
   * @param {GroupUpdateT} update
   * @param {Uint8Array | null} text the sealed description
   * @param {import('../protocol/frames.js').Deliver} frame
   * @param {number} now
   * @returns {Promise<[string, unknown][]>}
   */
  async _applyUpdate(t, sender, device, update, text, frame, now) {
    const hex = toHex(update.groupId);
    const me = this._c.username;
    const groups = t.objectStore('groups');
    const row = (await req(groups.get(hex))) ?? newRow(hex, now);
    const targets = new Set(update.targets);
    const without = (/** @type {Set<string>} */ gone) => row.members.filter((/** @type {Member} */ m) => !gone.has(m.username));
    switch (update.action) {
      case GroupAction.CREATED:
      case GroupAction.SNAPSHOT:
        Object.assign(row, { name: update.name, timerSeconds: update.timerSeconds, needsFetch: true });
        if (update.action === GroupAction.SNAPSHOT) row.member = true;
        break;
      case GroupAction.RENAMED:
        row.name = update.name;
        break;
      case GroupAction.MEMBERS_ADDED:
        row.members = [...without(targets), ...update.targets.map((/** @type {string} */ username) => ({ username, admin: false }))];
        if (me && targets.has(me)) row.member = true;
        break;
      case GroupAction.MEMBERS_REMOVED:
        row.members = without(targets);
        if (me && targets.has(me)) Object.assign(row, { member: false, needsFetch: true }); // the server says if so
        break;
      case GroupAction.LEFT:
        row.members = without(new Set([sender]));
        break;
      default:
        row.needsFetch = true;
    }
    if (row.needsFetch) this._fetchDue = true;
    await req(groups.put(row));
    const own = sender === me;
    const message = { ...this._eventRow(hex, sender, device, own ? 'out' : 'in', Number(update.sentAtMs), frame.serverTimeMs, frame.seq, now), text };
    const id = await req(t.objectStore('messages').add(message));
    const shown = describeUpdate(sender, update.action, update.name, update.targets);
    return [['message', { message: this._c._publicMessage({ ...message, id }, shown) }], ['group', { id: hex }]];
  }

  /**
   * A row for a membership or name change shown in the conversation (a notice: nothing
   * unread, no receipt).
   * @param {string} hex
   * @param {string} sender
   * @param {number} device
   * @param {'in' | 'out'} direction
   * @param {number} sentAt
   * @param {unknown} serverTime
   * @param {unknown} seq
   * @param {number} now
   */
  _eventRow(hex, sender, device, direction, sentAt, serverTime, seq, now) {
    return {
      kind: 'group', direction, peer: peerOf(hex), sender, senderDevice: device, text: /** @type {Uint8Array | null} */ (null),
      code: null, sentAt, serverTime, receivedAt: now, status: direction === 'in' ? 'read' : 'sent', seq,
    }; // prettier-ignore
  }

  /**
   * An undecryptable group message, listed once per seq.
   * @param {IDBTransaction} t
   * @param {import('../protocol/frames.js').Deliver} frame
   * @param {string} hex
   * @param {number} code
   * @param {number} now
   * @returns {Promise<[string, unknown][]>}
   */
  async _undecryptable(t, frame, hex, code, now) {
    const messages = t.objectStore('messages');
    if (frame.seq !== 0 && (await req(messages.index('useq').count(/** @type {number} */ (frame.seq))))) return [];
    /** @type {Record<string, unknown>} */
    const row = {
      kind: 'undecryptable', direction: 'in', peer: peerOf(hex), sender: frame.sender, senderDevice: frame.senderDevice,
      text: null, code: errorSlug(code) ?? String(code), sentAt: null, serverTime: frame.serverTimeMs, receivedAt: now,
      status: 'received', seq: frame.seq,
    }; // prettier-ignore
    if (frame.seq !== 0) row.useq = frame.seq;
    const id = await req(messages.add(row));
    return [['undecryptable', { message: this._c._publicMessage({ ...row, id }, null) }]];
  }

  /** Whether groups heard of wait to be looked up (after a push). */
  get fetchDue() {
    return this._fetchDue;
  }

  /** Look up, on the server, the groups heard of but not yet fetched ('group' events). */
  async fetchPending() {
    if (!this._fetchDue) return;
    this._fetchDue = false;
    for (const row of await this._store.getAll('groups')) {
      if (!row.needsFetch) continue;
      try {
        await this._saveMembers(await this._info(row.id));
      } catch (error) {
        const code = error instanceof ClientError ? error.code : '';
        if (code === 'not_a_member' || code === 'unknown_group') {
          await this._update(row.id, (r) => ({ ...r, member: false, needsFetch: false }));
        } else {
          this._fetchDue = true;
          continue;
        }
      }
      this._c._emit('group', { id: row.id });
    }
  }

  // --- REST and the local row -------------------------------------------------------------

  /** @param {string} hex */
  async _info(hex) {
    const info = parseInfo(await this._request('GET', `/api/v1/groups/${hex}`, undefined, hex));
    if (info.id !== hex) throw new ClientError(LocalCode.BAD_RESPONSE, `asked for group ${hex}, got ${info.id}`);
    return info;
  }

  /**
   * A groups API request; not being a member (any more) is remembered.
   * @param {string} method
   * @param {string} path
   * @param {unknown} body
   * @param {string} hex
   */
  async _request(method, path, body, hex) {
    try {
      return await this._c._api.request(method, path, body);
    } catch (error) {
      const code = error instanceof ClientError ? error.code : '';
      if ((code === 'not_a_member' && method !== 'DELETE') || code === 'unknown_group') {
        await this._update(hex, (r) => ({ ...r, member: false }));
      }
      throw error;
    }
  }

  /** @param {GroupInfo} info */
  async _saveMembers(info) {
    const me = this._c.username;
    const admin = info.members.some((m) => m.username === me && m.admin);
    const member = info.members.some((m) => m.username === me);
    await this._update(info.id, (r) => ({ ...r, members: info.members, admin, member, needsFetch: false }));
  }

  /**
   * Read, change and write the group's row in one transaction (created if missing).
   * @param {string} hex
   * @param {(row: any) => any} change
   */
  _update(hex, change) {
    const now = this._c._clock();
    return this._store.write(['groups'], async (t) => {
      const groups = t.objectStore('groups');
      await req(groups.put(change((await req(groups.get(hex))) ?? { ...newRow(hex, now), needsFetch: false })));
    });
  }

  /** @param {string} hex */
  async _member(hex) {
    const row = await this._store.get('groups', hex);
    if (!row) throw new ClientError('unknown_group', `this device knows no group ${hex}`);
    if (!row.member) throw new ClientError('not_a_member', `you are no longer a member of group ${hex}`);
    return row;
  }

  /** @param {{username: string, deviceId: number}} e */
  _isMe(e) {
    return e.username === this._c.username && e.deviceId === this._c.deviceId;
  }
}
