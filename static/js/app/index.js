// @ts-check
/**
 * The web client's logic, without DOM: import `WebClient` and drive it from the page.
 *
 *     const client = await WebClient.open();          // IndexedDB "sealpost"
 *     if (!client.registered) await client.register('alice', password);
 *     client.addEventListener('message', (e) => show(e.detail.message));
 *     await client.connect();
 *     await client.sendText('bob', 'hello');
 *
 * `WebClient` (client.js) API:
 *
 *   static open({baseUrl = location.origin}) -> WebClient   loads the state from IndexedDB
 *   registered, linked, username, deviceId, connectionState ('offline'|'connecting'|'online'),
 *   receiptsEnabled                                          getters
 *   register(username, password, {deviceName = 'Web browser', birthDate, ageConfirmed, consents})
 *                                  'progress' events meanwhile; the region's age rule
 *                                  and consents (docs/api.md, sign-up), sent when given
 *   login(username, password)      not_linked unless this browser holds that account's device
 *   logout()                       ends the web session; keys and history stay (registered
 *                                  is false until login())
 *   connect(), close()
 *   sendText(username, text) -> Message   once the server accepted it ('sent')
 *   conversations() -> [{peer, lastMessage, unread}]   most recent first
 *   messages(peer) -> [Message]                          oldest first
 *   markRead(peer)                 incoming → 'read', and a READ receipt (if receipts on)
 *   safetyNumber(username) -> {digits, groups, qrPayload}
 *   identity(username) -> {accountKeyHex, changed, verified} | null
 *   trust(username, {verified = false})
 *   setReceipts(on), setTyping(on)  receipts sent; typing indicators sent and shown
 *   receiptsEnabled, typingEnabled  (both stored in IndexedDB, default on)
 *
 * Files, typing, disappearing messages (docs/protocol.md §17.4–17.5):
 *   sendFile(username, blob, {fileName, contentType, voice, durationMs, width, height,
 *            thumbnail, caption, onProgress(done, total), signal}) -> Message
 *                                  encrypts in slices, uploads with resume, sends the pointer
 *   download(messageId, {onProgress, signal}) -> Blob   fetched, digest-checked, decrypted
 *                                  (decrypt_failed, attachment_expired, unknown_attachment)
 *   sendTyping(username, started = true) -> whether the server took it (EPHEMERAL)
 *   setTimer(username, seconds) -> Message (kind 'timer'); timer(username) -> seconds
 *   purgeExpired() -> count         deletes disappearing messages whose time is up
 *   rotatePrekeys()                (connect() does it when the signed prekey is 7 days old)
 *
 * Groups (docs/protocol.md §17, as client/groups.py; group-client.js, loaded on first use):
 *   groups.create(name, usernames) -> id (32 hex digits)   GROUP_UPDATE created + our key
 *                                  pairwise to every member
 *   groups.sendText(id, text) -> Message   one GROUP_SEND (stale_roster: reconcile, retry)
 *   groups.add(id, usernames) -> added, groups.remove(id, username), groups.leave(id),
 *   groups.rename(id, name), groups.list(), groups.get(id), groups.fetch(id)
 *                                  -> {id, name, timerSeconds, members, admin, member}
 *   A group's conversation is peer `group:<id>` in conversations() (with `group`),
 *   messages(), markRead() and sendText(); its messages carry `sender`, and kind 'group'
 *   is a membership or name change in `text` ("alice added carol").
 *
 * Several devices per account (docs/api.md):
 *   beginLink() -> {text, fingerprint, address, expiresAt}   new browser: show text as QR
 *   completeLink({deviceName, signal, onWait}) -> {username, deviceId, historyFollows}
 *   cancelLink()
 *   previewLink(code) -> {fingerprint, username, address}     what approving would let in
 *   approveLink(code, {historyBytes, timeoutMs, signal, onStage})
 *                                  -> {deviceIds, historyMessages, historyChunks}
 *   devices() -> [{deviceId, name, createdAt, lastSeenAt, current, listed}]
 *   renameDevice(deviceId, name), revokeDevice(deviceId) -> whether it was this one
 *   refusedDevices(username) -> [{deviceId, reason}]   from the last device-list check
 *
 * Message: {id (string), peer, direction 'in'|'out', kind 'text'|'undecryptable'|'attachment'|
 * 'timer'|'group', text, sender? (group messages), sentAt (ms), status, senderDevice, serverTime, code?, attachment?
 * {blobId, contentType, fileName, size, voice, durationMs, width, height, thumbnail,
 * caption}, timerSeconds?, expiresAt?}. A disappearing message has timerSeconds, and
 * expiresAt once its clock runs (sent; or shown, i.e. markRead, for one received). An outgoing message whose
 * senderDevice is not this browser's deviceId was sent from another device of the account
 * (a SENT transcript, or imported history). Outgoing status: 'pending' →
 * 'sent' → 'delivered' → 'read' (never backwards), or 'failed'. Incoming: 'received' →
 * 'read'. Undecryptable entries have text null and `code`, the reason (a protocol slug).
 *
 * Events (CustomEvent, fields in `detail`):
 *   'message' {message}        a text stored: incoming, or outgoing once stored ('pending');
 *                              the message's id identifies it in later 'status' events
 *   'status' {id, peer, status, expiresAt?}   expiresAt: a disappearing message was shown
 *   'typing' {peer, device, started}   (only while typing indicators are on)
 *   'timer' {peer, timerSeconds, by}   the conversation's disappearing timer changed
 *   'group' {id}               a group's name, members or membership changed
 *   'expired' {peer, ids}      disappearing messages deleted
 *   'undecryptable' {message}  an envelope that could not be read, stored and acknowledged
 *   'identity-changed' {username}
 *   'connection' {state}
 *   'progress' {done, total}   key generation during register() and completeLink()
 *   'device-refused' {username, deviceId, reason}   a device the account's signed device
 *                              list does not name (or not with that certificate): never
 *                              encrypted to; a send the server insists on it for fails
 *                              with unsigned_device
 *   'history-progress' {received, total}   HISTORY chunks from the device that linked us
 *   'history-imported' {count}  that history is in (count: texts added)
 *   'error' {code, message}    a failure in the background (outbox, receipts, prekeys)
 *
 * Every error thrown is a ClientError {code, message, fields, status}: `code` is a protocol
 * ErrorCode slug ('untrusted_identity', 'unknown_account', ...) or a LocalCode.
 */

export { WebClient, DEVICE_ID, DEFAULT_HISTORY_BYTES, LINK_TIMEOUT_MS, linkFingerprint, parseLinkCode } from './client.js';
export { ClientError, LocalCode, asClientError } from './errors.js';
export { Api, toBase64, fromBase64 } from './api.js';
export { Relay, backoffDelay, relayUrl, SUBPROTOCOL, TOKEN_PREFIX, REVOKED_CLOSE_CODE } from './relay.js';
export { Store, DB_NAME, DB_VERSION, req } from './store.js';
