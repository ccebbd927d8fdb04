// @ts-check
/**
 * The chat page: conversation list, conversation, safety number, the account's devices,
 * the blocking warning when a contact's identity key changes, and the warning in a
 * conversation when the server shows a device the contact's signed device list does not
 * name. State lives in the WebClient (and its
 * store); this module only draws it and forwards what the person does. Which pane shows
 * follows the URL fragment (#with=alice, #safety=alice, #devices), so reload and the phone's back
 * button keep their place.
 */

import { devicesPane } from './devices.js';
import { byId, el, fillAll, formatTime, listen, show } from './dom.js';
import { describeError } from './errors.js';
import { formatBytes, formatDuration } from './format.js';
import { renderSafetyNumber } from './safety.js';

/**
 * What each status looks like: the tick, and the words for screen readers and tooltips.
 * @type {Record<string, {tick: string, label: string}>}
 */
const STATUS = {
  pending: { tick: '🕓', label: 'Sending' },
  sent: { tick: '✓', label: 'Sent' },
  delivered: { tick: '✓✓', label: 'Delivered' },
  read: { tick: '✓✓', label: 'Read' },
  failed: { tick: '!', label: 'Not sent' },
  waiting: { tick: '🕓', label: 'Waiting for the connection' },
  received: { tick: '', label: '' },
};

const UNDECRYPTABLE_TEXT =
  'This message could not be decrypted. It was damaged or tampered with on the way, so it is not shown.';
/** @type {Record<string, [string, string]>} the words shown, and the tooltip */
const CONNECTION_TEXT = {
  online: ['Online', 'Connected: messages go out and arrive at once'],
  connecting: ['Connecting…', 'Reconnecting to the server'],
  offline: ['Offline', 'Offline: what you send waits here and goes out when the connection is back'],
};

/**
 * @typedef {{id: string, peer: string, direction: 'out'|'in', text?: string|null, sentAt?: number|null,
 *   serverTime?: number|null, status: string, kind?: string, code?: string, senderDevice?: number, sender?: string,
 *   attachment?: import('../app/client.js').AttachmentInfo, timerSeconds?: number, expiresAt?: number}} Message
 */

/** @type {Record<number, string>} the timer choices, as the header's select names them */
const TIMER_WORDS = { 30: '30 seconds', 300: '5 minutes', 3600: '1 hour', 86400: '1 day', 604800: '1 week' };

/** @param {number} seconds */
function timerWords(seconds) {
  if (TIMER_WORDS[seconds]) return TIMER_WORDS[seconds];
  if (seconds % 86400 === 0) return `${seconds / 86400} days`;
  if (seconds % 3600 === 0) return `${seconds / 3600} hours`;
  if (seconds % 60 === 0) return `${seconds / 60} minutes`;
  return `${seconds} seconds`;
}

/** A disappearing message's time left, short: 4:59, 2 h, 6 d. @param {number} ms */
function timeLeft(ms) {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  if (seconds >= 2 * 86400) return `${Math.floor(seconds / 86400)} d`;
  if (seconds >= 2 * 3600) return `${Math.floor(seconds / 3600)} h`;
  return formatDuration(seconds * 1000);
}

const MAX_FILE_BYTES = 104_857_600; // 100 MiB, protocol.md §17.5
/** Photos, files and voice messages: loaded with the first one (a chunk of its own). */
const media = () => import('./media.js');
/** The group dialogs (new group, members): a chunk of its own, loaded when opened. */
const groupDialogs = () => import('./group-dialogs.js');
/** @param {string | null} peer */
const isGroup = (peer) => Boolean(peer?.startsWith('group:'));
const TYPING_EVERY_MS = 3000; // a "started" at most this often while typing
const TYPING_IDLE_MS = 5000; // no key for this long: "stopped"
const TYPING_SHOWN_MS = 6000; // someone's "typing…" without news for this long goes

/**
 * @param {any} client a WebClient, registered
 */
export async function chatPage(client) {
  const main = byId('main');
  const conversationsList = byId('conversations');
  const noConversations = byId('no-conversations');
  const messagesList = byId('messages');
  const composer = /** @type {HTMLFormElement} */ (byId('composer'));
  const textarea = /** @type {HTMLTextAreaElement} */ (byId('text'));
  const sendError = byId('send-error');
  const appError = byId('app-error');
  const conn = byId('conn');
  const modal = byId('identity-modal');

  /** @type {string | null} the contact whose conversation or safety number is open */
  let current = null;
  /** @type {Map<string, HTMLLIElement>} message id -> its element, for the open conversation */
  let nodes = new Map();
  /** Contacts whose new identity key has not been accepted yet: sending to them waits. */
  const blocked = new Set();
  /** @type {string[]} warnings waiting behind the one on screen */
  const warnings = [];
  /** @type {string | null} */
  let warningPeer = null;
  /**
   * Sends the client could not take at all (no connection to look up keys or store the
   * message): they wait here, shown with a clock, and go out in order once the connection
   * is back. In memory only; leaving the page with any asks first.
   * @type {{peer: string, text: string, node: HTMLLIElement | null}[]}
   */
  const waiting = [];
  let flushing = false;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let retryTimer;
  let waitingSeq = 0;
  /**
   * Sends in progress, to learn whether the client stored each one: it announces a stored
   * message with a 'message' event before it talks to the server.
   * @type {Set<{peer: string, text: string, id: string | null, placeholder: HTMLLIElement | null}>}
   */
  const attempts = new Set();

  byId('me').textContent = client.username ?? '';
  /** @type {Map<string, Map<number, string>>} devices refused per account: never encrypted to */
  const refused = new Map();
  const deviceWarning = byId('device-warning');
  const notice = byId('app-notice');
  const devices = devicesPane(client, {
    reportError: (error) => reportError(error),
    onRevokedSelf: () => location.assign('/login'),
  });

  // --- panes and routing -----------------------------------------------------------------

  /** @param {'list'|'chat'|'safety'|'devices'|'settings'} view */
  function setView(view) {
    main.dataset.view = view;
  }

  function route() {
    const params = new URLSearchParams(location.hash.slice(1));
    const safety = params.get('safety');
    const peer = params.get('with');
    if (safety) void openSafety(safety);
    else if (peer) void openChat(peer);
    else if (params.has('devices')) {
      current = null;
      setView('devices');
      highlightCurrent();
      devices.open();
    } else if (params.has('settings')) {
      current = null;
      setView('settings');
      highlightCurrent();
      receiptsBox.checked = client.receiptsEnabled;
      typingBox.checked = client.typingEnabled;
    } else {
      current = null;
      setView('list');
      highlightCurrent();
    }
  }

  /** @param {string} fragment */
  function go(fragment) {
    if (location.hash.slice(1) === fragment) route();
    else location.hash = fragment;
  }

  // --- conversation list -----------------------------------------------------------------

  let listQueued = false;
  /** Redraw the list once per burst of events. */
  function refreshList() {
    if (listQueued) return;
    listQueued = true;
    queueMicrotask(async () => {
      listQueued = false;
      try {
        renderConversations(await client.conversations());
      } catch (error) {
        reportError(error);
      }
    });
  }

  /** @param {{peer: string, lastMessage?: Message|null, unread: number, group?: {name: string}}[]} conversations most recent first */
  function renderConversations(conversations) {
    let totalUnread = 0;
    const items = conversations.map(({ peer, lastMessage, unread, group }) => {
      totalUnread += unread;
      const badge = el('span', {
        class: 'badge',
        text: String(unread),
        attrs: { 'aria-label': `${unread} unread` },
        data: { unread: String(unread) },
      });
      badge.hidden = !unread;
      const link = el('a', { class: 'conv', attrs: { href: `#with=${encodeURIComponent(peer)}` } }, [
        el('span', { class: 'peer', text: group ? group.name || 'Unnamed group' : peer }),
        el('span', { class: 'preview', text: preview(lastMessage) }),
        el('time', { class: 'when', text: formatTime(lastMessage?.sentAt ?? lastMessage?.serverTime) }),
        badge,
      ]);
      return el('li', { data: { peer } }, [link]);
    });
    conversationsList.replaceChildren(...items);
    show(noConversations, items.length === 0);
    document.title = `${totalUnread ? `(${totalUnread}) ` : ''}Chats · Sealpost`;
    highlightCurrent();
  }

  function highlightCurrent() {
    for (const item of conversationsList.children) {
      item.toggleAttribute('aria-current', item instanceof HTMLElement && item.dataset.peer === current);
    }
  }

  /** @param {Message | null | undefined} message */
  function preview(message) {
    if (!message) return '';
    if (message.kind === 'undecryptable') return 'Message could not be decrypted';
    if (message.kind === 'timer') return timerNotice(message);
    if (message.kind === 'group') return message.text ?? '';
    if (message.kind === 'attachment' && message.attachment) {
      const a = message.attachment;
      const what = a.voice ? '♪ Voice message' : a.contentType.startsWith('image/') ? 'Photo' : a.fileName || 'File';
      return message.direction === 'out' ? `You: ${what}` : what;
    }
    const text = (message.text ?? '').replace(/\s+/g, ' ').slice(0, 80);
    if (message.direction === 'in' && message.sender) return `${message.sender}: ${text}`;
    return message.direction === 'out' ? `You: ${text}` : text;
  }

  // --- one conversation ------------------------------------------------------------------

  /** @param {string} peer */
  async function openChat(peer) {
    peer = peer.trim().toLowerCase();
    const switching = current !== peer || main.dataset.view !== 'chat';
    if (current !== peer) stopTyping();
    current = peer;
    fillAll('#peer-name, .safety-peer', peer);
    setView('chat');
    highlightCurrent();
    if (switching) {
      setSendError('');
      nodes = new Map();
      messagesList.replaceChildren();
    }
    showDeviceWarning();
    showTyping();
    const group = isGroup(peer);
    for (const id of ['open-safety', 'timer-pick']) show(byId(id), !group);
    show(byId('open-members'), group);
    try {
      if (group) {
        const messages = /** @type {Message[]} */ (await client.messages(peer));
        if (current !== peer) return;
        await showGroupName(peer);
        for (const message of messages) upsertMessage(message);
        scrollToEnd();
        markReadIfSeen();
        return;
      }
      timerSelect.value = String(await client.timer(peer));
      for (const { deviceId, reason } of await client.refusedDevices(peer)) noteRefused(peer, deviceId, reason);
      const messages = /** @type {Message[]} */ (await client.messages(peer));
      if (current !== peer) return;
      for (const message of messages) upsertMessage(message);
      for (const item of waiting) {
        if (item.peer === peer && !item.node?.isConnected) {
          item.node = waitingNode(item);
          messagesList.append(item.node);
        }
      }
      scrollToEnd();
      markReadIfSeen();
      const identity = await client.identity(peer);
      if (identity?.changed) warnIdentityChanged(peer);
    } catch (error) {
      reportError(error);
    }
    if (matchMedia('(min-width: 48rem)').matches) textarea.focus();
  }

  /**
   * @param {Message} message
   * @param {HTMLLIElement | null} [placeholder] a waiting message this one takes the place of
   */
  function upsertMessage(message, placeholder = null) {
    if (message.peer !== current) return;
    const existing = nodes.get(message.id) ?? (placeholder?.isConnected ? placeholder : undefined);
    const node = messageNode(message);
    if (existing) existing.replaceWith(node);
    else messagesList.append(node);
    nodes.set(message.id, node);
  }

  /** @param {{peer: string, text: string}} item */
  function waitingNode(item) {
    return messageNode({
      id: `waiting-${++waitingSeq}`,
      peer: item.peer,
      direction: 'out',
      text: item.text,
      sentAt: Date.now(),
      status: 'waiting',
    });
  }

  /** @param {Message} message */
  function timerNotice(message) {
    const seconds = message.timerSeconds ?? 0;
    const who = message.direction === 'out' ? 'You' : message.peer;
    return seconds
      ? `${who} set disappearing messages to ${timerWords(seconds)}`
      : `${who} turned off disappearing messages`;
  }

  /** A group's name in the conversation's head. @param {string} peer */
  async function showGroupName(peer) {
    const group = await client.groups.get(peer);
    if (current === peer) fillAll('#peer-name', group?.name || 'Unnamed group');
  }

  /** @param {Message} message */
  function messageNode(message) {
    if (message.kind === 'group') {
      return el('li', { class: 'notice-line', text: message.text ?? '', data: { id: String(message.id), kind: 'group' } });
    }
    if (message.kind === 'timer') {
      return el('li', { class: 'notice-line', text: timerNotice(message), data: { id: String(message.id), kind: 'timer' } });
    }
    if (message.kind === 'attachment' && message.attachment) {
      const li = el('li', {
        class: `msg ${message.direction}`,
        data: { id: String(message.id), status: message.status, kind: 'attachment' },
      });
      li.append(metaNode(message));
      media().then(
        ({ attachmentBody }) => li.prepend(attachmentBody(client, message, li, { el, describeError, formatBytes, formatDuration })),
        reportError,
      );
      return li;
    }
    const undecryptable = message.kind === 'undecryptable';
    const body = el('p', {
      class: undecryptable ? 'text undecryptable' : 'text',
      text: undecryptable ? UNDECRYPTABLE_TEXT : (message.text ?? ''),
    });
    const meta = metaNode(message);
    const sender = message.direction === 'in' && message.sender ? [el('span', { class: 'sender', text: message.sender })] : [];
    return el(
      'li',
      {
        class: `msg ${message.direction}${undecryptable ? ' bad' : ''}`,
        data: { id: String(message.id), status: message.status, ...(undecryptable ? { kind: 'undecryptable' } : {}) },
      },
      [...sender, body, meta],
    );
  }

  /** The time, a disappearing message's time left, and (ours) the tick. @param {Message} message */
  function metaNode(message) {
    const meta = el('span', { class: 'meta' }, [el('time', { text: formatTime(message.sentAt ?? message.serverTime) })]);
    if (message.timerSeconds) meta.prepend(expiryNode(message));
    if (message.direction === 'out') meta.append(tickNode(message.status));
    return meta;
  }

  /** @param {{timerSeconds?: number, expiresAt?: number}} message */
  function expiryNode(message) {
    const node = el('span', {
      class: 'expiry',
      attrs: { title: `Disappearing message (${timerWords(message.timerSeconds ?? 0)})` },
      data: { timer: String(message.timerSeconds ?? 0) },
    });
    if (message.expiresAt) {
      node.dataset.expires = String(message.expiresAt);
      node.textContent = `◷ ${timeLeft(message.expiresAt - Date.now())}`;
    } else {
      node.textContent = `◷ ${timerWords(message.timerSeconds ?? 0)}`;
    }
    return node;
  }

  // Each disappearing message counts down; the client deletes it when it is due.
  setInterval(() => {
    for (const node of messagesList.querySelectorAll('.expiry[data-expires]')) {
      const left = Number(/** @type {HTMLElement} */ (node).dataset.expires) - Date.now();
      node.textContent = `◷ ${timeLeft(left)}`;
    }
  }, 1000);

  /** @param {string} status */
  function tickNode(status) {
    const look = STATUS[status] ?? { tick: '', label: status };
    return el('span', {
      class: `tick ${status}`,
      text: look.tick,
      attrs: { title: look.label, 'aria-label': look.label },
    });
  }

  /** @param {{id: string, peer: string, status: string, expiresAt?: number}} update */
  function updateStatus({ id, peer, status, expiresAt }) {
    if (peer !== current) return;
    const node = nodes.get(String(id));
    if (!node) return;
    node.dataset.status = status;
    node.querySelector('.tick')?.replaceWith(tickNode(status));
    const expiry = node.querySelector('.expiry');
    if (expiresAt && expiry instanceof HTMLElement) {
      expiry.replaceWith(expiryNode({ timerSeconds: Number(expiry.dataset.timer), expiresAt }));
    }
  }

  function nearEnd() {
    return messagesList.scrollHeight - messagesList.scrollTop - messagesList.clientHeight < 120;
  }

  function scrollToEnd() {
    messagesList.scrollTop = messagesList.scrollHeight;
  }

  function markReadIfSeen() {
    if (current && main.dataset.view === 'chat' && document.visibilityState === 'visible') {
      Promise.resolve(client.markRead(current)).then(refreshList, reportError);
    }
  }

  /** @param {string} text */
  function setSendError(text) {
    sendError.textContent = text;
  }

  composer.addEventListener('submit', (event) => {
    event.preventDefault();
    void send();
  });
  textarea.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      void send();
    }
  });

  const OFFLINE = new Set(['unreachable', 'closed']);

  async function send() {
    const peer = current;
    const text = textarea.value;
    if (!peer || !text.trim()) return;
    if (blocked.has(peer)) {
      setSendError(describeError({ code: 'untrusted_identity' }));
      warnIdentityChanged(peer);
      return;
    }
    setSendError('');
    textarea.value = '';
    stopTyping();
    if (waiting.length) {
      wait(peer, text); // behind the others, to keep the order
      void flushWaiting();
      return;
    }
    if ((await attemptSend(peer, text, null)) === 'offline') wait(peer, text);
  }

  /**
   * One try at handing `text` to the client.
   * - 'done': sent, or stored by the client (it retries by itself, or marks it failed);
   * - 'offline': not stored, for want of a connection: try again later;
   * - 'failed': refused (shown, and the text put back in the composer).
   * @param {string} peer
   * @param {string} text
   * @param {HTMLLIElement | null} placeholder
   * @returns {Promise<'done' | 'offline' | 'failed'>}
   */
  async function attemptSend(peer, text, placeholder) {
    const attempt = { peer, text, id: /** @type {string | null} */ (null), placeholder };
    attempts.add(attempt);
    try {
      const message = /** @type {Message} */ (await client.sendText(peer, text));
      upsertMessage(message, placeholder);
      if (current === peer) scrollToEnd();
      if (message.status === 'failed') failedSend(peer, text, message);
      refreshList();
      return 'done';
    } catch (error) {
      const code = /** @type {any} */ (error)?.code;
      if (attempt.id === null && OFFLINE.has(code)) return 'offline';
      if (attempt.id !== null) {
        // Stored: the client sends it when it can, or marks it failed.
        if (current === peer && !OFFLINE.has(code)) setSendError(describeError(error));
        return 'done';
      }
      failedSend(peer, text, error);
      return 'failed';
    } finally {
      attempts.delete(attempt);
    }
  }

  /**
   * @param {string} peer
   * @param {string} text
   */
  function wait(peer, text) {
    const item = { peer, text, node: /** @type {HTMLLIElement | null} */ (null) };
    if (current === peer) {
      item.node = waitingNode(item);
      messagesList.append(item.node);
      scrollToEnd();
      setSendError('Offline: your message waits here and goes out when the connection is back.');
    }
    waiting.push(item);
    scheduleRetry();
  }

  function scheduleRetry() {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => void flushWaiting(), 3000);
  }

  async function flushWaiting() {
    if (flushing || !waiting.length) return;
    if (client.connectionState !== 'online') {
      scheduleRetry();
      return;
    }
    flushing = true;
    try {
      while (waiting.length) {
        const item = waiting[0];
        const outcome = await attemptSend(item.peer, item.text, item.node);
        if (outcome === 'offline') break;
        waiting.shift();
        item.node?.remove(); // already replaced by the stored message, if it was on screen
      }
    } finally {
      flushing = false;
    }
    if (waiting.length) scheduleRetry();
    else if (sendError.textContent?.startsWith('Offline')) setSendError('');
  }

  /**
   * @param {string} peer
   * @param {string} text
   * @param {any} error
   */
  function failedSend(peer, text, error) {
    if (current === peer && !textarea.value) textarea.value = text; // nothing typed is lost
    if (current === peer) setSendError(describeError(error));
    if (error?.code === 'untrusted_identity') warnIdentityChanged(peer);
  }

  // --- typing indicators ----------------------------------------------------------------

  /** Ours: the peer told we are typing, and when last. */
  let typingTo = /** @type {string | null} */ (null);
  let typingSentAt = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let typingIdle;
  /** Theirs: who is typing to us, each cleared after TYPING_SHOWN_MS without news. */
  const typingFrom = new Map();
  const typingLine = byId('typing');

  textarea.addEventListener('input', () => {
    const peer = current;
    if (!peer || !client.typingEnabled || blocked.has(peer) || client.connectionState !== 'online') return;
    if (!textarea.value.trim()) {
      stopTyping();
      return;
    }
    const now = Date.now();
    if (typingTo !== peer || now - typingSentAt >= TYPING_EVERY_MS) {
      typingTo = peer;
      typingSentAt = now;
      client.sendTyping(peer, true).catch(() => {});
    }
    clearTimeout(typingIdle);
    typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
  });
  textarea.addEventListener('blur', () => stopTyping());

  /** Tell the peer we stopped, if we had told them we started. */
  function stopTyping() {
    clearTimeout(typingIdle);
    const peer = typingTo;
    typingTo = null;
    typingSentAt = 0;
    if (peer) client.sendTyping(peer, false).catch(() => {});
  }

  /** @param {string} peer @param {boolean} started */
  function noteTyping(peer, started) {
    clearTimeout(typingFrom.get(peer));
    typingFrom.delete(peer);
    if (started) {
      typingFrom.set(
        peer,
        setTimeout(() => {
          typingFrom.delete(peer);
          showTyping();
        }, TYPING_SHOWN_MS),
      );
    }
    showTyping();
  }

  function showTyping() {
    typingLine.textContent = current && typingFrom.has(current) ? `${current} is typing…` : '';
  }

  // --- disappearing messages ----------------------------------------------------------------

  const timerSelect = /** @type {HTMLSelectElement} */ (byId('timer-select'));
  timerSelect.addEventListener('change', async () => {
    const peer = current;
    if (!peer) return;
    const seconds = Number(timerSelect.value);
    try {
      const message = /** @type {Message} */ (await client.setTimer(peer, seconds));
      upsertMessage(message);
      if (current === peer) scrollToEnd();
      refreshList();
    } catch (error) {
      setSendError(describeError(error));
      timerSelect.value = String(await client.timer(peer));
    }
  });

  // --- files, photos, voice messages ----------------------------------------------------------

  const fileInput = /** @type {HTMLInputElement} */ (byId('file-input'));
  byId('attach').addEventListener('click', () => fileInput.click());
  fileInput.addEventListener('change', () => {
    for (const file of fileInput.files ?? []) void sendFile(file);
    fileInput.value = '';
  });
  const chatPane = byId('chat-pane');
  chatPane.addEventListener('dragover', (event) => {
    if (!event.dataTransfer?.types.includes('Files')) return;
    event.preventDefault();
    chatPane.classList.add('dropping');
  });
  chatPane.addEventListener('dragleave', (event) => {
    if (event.target === chatPane || !chatPane.contains(/** @type {Node | null} */ (event.relatedTarget))) {
      chatPane.classList.remove('dropping');
    }
  });
  chatPane.addEventListener('drop', (event) => {
    chatPane.classList.remove('dropping');
    if (!event.dataTransfer?.files.length) return;
    event.preventDefault();
    for (const file of event.dataTransfer.files) void sendFile(file);
  });
  textarea.addEventListener('paste', (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (!files.length) return;
    event.preventDefault();
    for (const file of files) void sendFile(file);
  });

  /**
   * Uploads on screen: a bubble with a progress bar and Cancel, replaced by the message
   * once the pointer is stored (the client's 'message' event).
   * @type {Set<{peer: string, name: string, size: number, node: HTMLLIElement}>}
   */
  const uploads = new Set();

  /**
   * @param {Blob} file
   * @param {{voice?: boolean, durationMs?: number, fileName?: string}} [extra]
   */
  async function sendFile(file, extra = {}) {
    const peer = current;
    if (!peer) return;
    const name = extra.fileName ?? (file instanceof File ? file.name : 'file');
    if (blocked.has(peer)) {
      setSendError(describeError({ code: 'untrusted_identity' }));
      warnIdentityChanged(peer);
      return;
    }
    if (file.size > MAX_FILE_BYTES) {
      setSendError(`“${name}” is ${formatBytes(file.size)}; files can be at most 100 MB. (attachment_too_large)`);
      return;
    }
    setSendError('');
    const abort = new AbortController();
    const bar = el('progress', { attrs: { max: '100', value: '0' } });
    const percent = el('span', { class: 'percent', text: '0%' });
    const cancel = el('button', { class: 'secondary', text: 'Cancel', attrs: { type: 'button' } });
    cancel.addEventListener('click', () => abort.abort());
    const node = el('li', { class: 'msg out uploading', data: { status: 'uploading' } }, [
      el('p', { class: 'note', text: extra.voice ? `♪ Voice message ${formatDuration(extra.durationMs ?? 0)}` : `${name} · ${formatBytes(file.size)}` }),
      bar,
      el('div', { class: 'upload' }, [percent, cancel]),
    ]);
    const upload = { peer, name, size: file.size, node };
    uploads.add(upload);
    messagesList.append(node);
    scrollToEnd();
    try {
      const picture = extra.voice ? null : await (await media()).makeThumbnail(file);
      const message = /** @type {Message} */ (
        await client.sendFile(peer, file, {
          ...extra,
          fileName: name,
          ...(picture ?? {}),
          signal: abort.signal,
          onProgress: (/** @type {number} */ done, /** @type {number} */ total) => {
            const value = total ? Math.floor((done / total) * 100) : 100;
            bar.value = value;
            percent.textContent = `${value}%`;
          },
        })
      );
      upsertMessage(message, node.isConnected ? node : null);
      if (message.status === 'failed') setSendError('The file was uploaded, but the message could not be sent.');
      refreshList();
    } catch (error) {
      node.remove();
      if (!abort.signal.aborted && current === peer) setSendError(`“${name}” was not sent. ${describeError(error)}`);
      if (/** @type {any} */ (error)?.code === 'untrusted_identity') warnIdentityChanged(peer);
    } finally {
      uploads.delete(upload);
    }
  }

  /** @type {import('./media.js').VoiceRecorder | null} */
  let recorder = null;
  const recordButton = byId('record');
  const recordingBar = byId('recording');
  const recordTime = byId('record-time');
  /** @type {ReturnType<typeof setInterval> | undefined} */
  let recordTicker;
  let recordingFor = /** @type {string | null} */ (null);

  recordButton.addEventListener('click', async () => {
    if (recorder?.recording) return void finishRecording(true);
    if (!current) return;
    setSendError('');
    try {
      recorder ??= new (await media()).VoiceRecorder();
      await recorder.start();
    } catch (error) {
      setSendError(/** @type {Error} */ (error).message);
      return;
    }
    recordingFor = current;
    recordButton.setAttribute('aria-pressed', 'true');
    recordingBar.hidden = false;
    recordTime.textContent = '0:00';
    const started = recorder.startedAt;
    recordTicker = setInterval(() => {
      recordTime.textContent = formatDuration(performance.now() - started);
    }, 250);
  });
  byId('record-send').addEventListener('click', () => void finishRecording(true));
  byId('record-cancel').addEventListener('click', () => void finishRecording(false));

  /** @param {boolean} send */
  async function finishRecording(send) {
    clearInterval(recordTicker);
    recordButton.removeAttribute('aria-pressed');
    recordingBar.hidden = true;
    const peer = recordingFor;
    recordingFor = null;
    if (!recorder) return;
    if (!send || !recorder.recording) {
      recorder.cancel();
      return;
    }
    const { blob, durationMs } = await recorder.stop();
    if (!blob.size) {
      setSendError('Nothing was recorded.');
      return;
    }
    if (peer !== current) return; // the conversation changed meanwhile: not sent
    const extension = blob.type.includes('ogg') ? 'ogg' : 'webm';
    const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
    await sendFile(blob, { voice: true, durationMs, fileName: `voice-${stamp}.${extension}` });
  }

  // --- settings ---------------------------------------------------------------------------------

  const receiptsBox = /** @type {HTMLInputElement} */ (byId('set-receipts'));
  const typingBox = /** @type {HTMLInputElement} */ (byId('set-typing'));
  receiptsBox.addEventListener('change', () => {
    Promise.resolve(client.setReceipts(receiptsBox.checked)).catch(reportError);
  });
  typingBox.addEventListener('change', () => {
    if (!typingBox.checked) {
      stopTyping();
      for (const peer of [...typingFrom.keys()]) noteTyping(peer, false);
    }
    Promise.resolve(client.setTyping(typingBox.checked)).catch(reportError);
  });

  // --- devices the server shows but the account never signed for ------------------------

  /**
   * @param {string} username
   * @param {number} deviceId
   * @param {string} reason
   */
  function noteRefused(username, deviceId, reason) {
    const known = refused.get(username) ?? new Map();
    known.set(deviceId, reason);
    refused.set(username, known);
    if (username === current) showDeviceWarning();
  }

  /** The warning in the open conversation, if the server showed its contact's account a device it refused. */
  function showDeviceWarning() {
    const known = current ? refused.get(current) : undefined;
    if (!current || !known?.size) {
      deviceWarning.hidden = true;
      deviceWarning.replaceChildren();
      return;
    }
    const list = [...known].map(([id, reason]) => `device ${id} (${reason})`).join(', ');
    const whose = current === client.username ? 'your own account' : `${current}’s account`;
    deviceWarning.replaceChildren(
      el('strong', { text: 'Warning: unknown device. ' }),
      document.createTextNode(
        `The server lists a device for ${whose} that the account has not signed for: ${list}. ` +
          'Nothing is encrypted to it. If this persists, compare safety numbers.',
      ),
    );
    deviceWarning.dataset.devices = [...known.keys()].join(',');
    deviceWarning.hidden = false;
  }

  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let noticeTimer;
  /**
   * @param {string} text
   * @param {number} [ms] how long it stays (0: until replaced)
   */
  function showNotice(text, ms = 8000) {
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(noticeTimer);
    if (ms) {
      noticeTimer = setTimeout(() => {
        notice.hidden = true;
      }, ms);
    }
  }

  // --- safety number ---------------------------------------------------------------------

  /** @param {string} peer */
  async function openSafety(peer) {
    peer = peer.trim().toLowerCase();
    current = peer;
    fillAll('#peer-name, .safety-peer', peer);
    setView('safety');
    const container = byId('safety');
    const state = byId('safety-state');
    container.replaceChildren(el('p', { class: 'hint', text: 'Computing…' }));
    state.textContent = '';
    try {
      const number = await client.safetyNumber(peer);
      if (current !== peer) return;
      renderSafetyNumber(container, number, peer);
      const identity = await client.identity(peer);
      const verified = Boolean(identity?.verified);
      state.textContent = verified
        ? `✓ You have verified ${peer}’s safety number.`
        : `Not verified yet.`;
      state.dataset.verified = String(verified);
      show(byId('mark-verified'), !verified);
    } catch (error) {
      container.replaceChildren(el('p', { class: 'error', text: describeError(error) }));
    }
  }

  byId('mark-verified').addEventListener('click', async () => {
    if (!current) return;
    try {
      await client.trust(current, { verified: true });
      blocked.delete(current);
      await openSafety(current);
    } catch (error) {
      reportError(error);
    }
  });

  // --- identity change: a blocking warning -----------------------------------------------

  /** @param {string} peer */
  function warnIdentityChanged(peer) {
    blocked.add(peer);
    if (warningPeer === peer || warnings.includes(peer)) return;
    if (warningPeer) {
      warnings.push(peer);
      return;
    }
    warningPeer = peer;
    fillAll('.identity-peer', peer);
    show(byId('identity-step-1'), true);
    show(byId('identity-step-2'), false);
    byId('identity-safety').replaceChildren();
    byId('identity-error').textContent = '';
    modal.hidden = false;
    main.inert = true;
    byId('identity-view').focus();
  }

  byId('identity-view').addEventListener('click', async () => {
    const peer = warningPeer;
    if (!peer) return;
    try {
      renderSafetyNumber(byId('identity-safety'), await client.safetyNumber(peer), peer);
      show(byId('identity-step-1'), false);
      show(byId('identity-step-2'), true);
      byId('identity-accept').focus();
    } catch (error) {
      byId('identity-error').textContent = describeError(error);
    }
  });

  /** @param {boolean} verified */
  async function acceptIdentity(verified) {
    const peer = warningPeer;
    if (!peer) return;
    try {
      await client.trust(peer, { verified });
    } catch (error) {
      byId('identity-error').textContent = describeError(error);
      return;
    }
    blocked.delete(peer);
    warningPeer = null;
    modal.hidden = true;
    main.inert = false;
    if (current === peer) {
      setSendError('');
      if (main.dataset.view === 'safety') void openSafety(peer);
      else textarea.focus();
    }
    const next = warnings.shift();
    if (next) warnIdentityChanged(next);
  }
  byId('identity-accept').addEventListener('click', () => void acceptIdentity(false));
  byId('identity-verify').addEventListener('click', () => void acceptIdentity(true));

  // --- the rest of the page --------------------------------------------------------------

  /** @param {any} error */
  function reportError(error) {
    appError.textContent = describeError(error);
    appError.hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => {
      appError.hidden = true;
    }, 8000);
  }
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let errorTimer;

  /** @param {string} state */
  function showConnection(state) {
    const [text, title] = CONNECTION_TEXT[state] ?? [state, state];
    conn.dataset.state = state;
    conn.textContent = text;
    conn.title = title;
  }

  const newChat = /** @type {HTMLFormElement} */ (byId('new-chat'));
  newChat.addEventListener('submit', (event) => {
    event.preventDefault();
    const input = /** @type {HTMLInputElement} */ (byId('new-peer'));
    const peer = input.value.trim().toLowerCase();
    if (!peer) return;
    input.value = '';
    go(`with=${encodeURIComponent(peer)}`);
  });
  byId('chat-back').addEventListener('click', () => go(''));
  byId('safety-back').addEventListener('click', () => {
    if (current) go(`with=${encodeURIComponent(current)}`);
    else go('');
  });
  byId('open-devices').addEventListener('click', () => go('devices'));
  byId('open-settings').addEventListener('click', () => go('settings'));
  byId('settings-back').addEventListener('click', () => go(''));
  byId('devices-back').addEventListener('click', () => go(''));
  byId('new-group').addEventListener('click', () => {
    groupDialogs().then(
      ({ newGroupDialog }) => newGroupDialog(client, { onCreated: (/** @type {string} */ id) => go(`with=${encodeURIComponent(`group:${id}`)}`) }),
      reportError,
    );
  });
  byId('open-members').addEventListener('click', () => {
    const peer = current;
    if (peer && isGroup(peer)) groupDialogs().then(({ membersDialog }) => membersDialog(client, peer), reportError);
  });
  listen(client, 'group', (/** @type {{id: string}} */ { id }) => {
    refreshList();
    if (current === `group:${id}`) showGroupName(current).catch(reportError);
  });
  byId('open-safety').addEventListener('click', () => {
    if (current) go(`safety=${encodeURIComponent(current)}`);
  });
  byId('logout').addEventListener('click', async () => {
    try {
      await client.logout();
    } finally {
      location.assign('/login');
    }
  });

  listen(client, 'message', (/** @type {{message: Message}} */ { message }) => {
    // Follow new messages unless the person has scrolled back to read older ones.
    const follow = message.direction === 'out' || nearEnd();
    let placeholder = null;
    if (message.direction === 'in') noteTyping(message.peer, false); // it arrived: no longer typing
    // A file this page is uploading: its bubble becomes the message.
    if (message.kind === 'attachment' && message.direction === 'out' && message.senderDevice === client.deviceId) {
      for (const upload of uploads) {
        if (upload.peer === message.peer && upload.name === message.attachment?.fileName && upload.size === message.attachment?.size) {
          placeholder = upload.node;
          uploads.delete(upload);
          break;
        }
      }
    }
    // A transcript from our other device is no send of this page's.
    if (message.direction === 'out' && message.senderDevice === client.deviceId) {
      for (const attempt of attempts) {
        if (attempt.id === null && attempt.peer === message.peer && attempt.text === message.text) {
          attempt.id = message.id;
          placeholder = attempt.placeholder;
          break;
        }
      }
    }
    upsertMessage(message, placeholder);
    if (message.peer === current) {
      if (follow) scrollToEnd();
      if (message.direction === 'in') markReadIfSeen();
    }
    refreshList();
  });
  listen(client, 'undecryptable', (/** @type {{message: Message}} */ { message }) => {
    const follow = nearEnd();
    upsertMessage(message);
    if (message.peer === current && follow) scrollToEnd();
    refreshList();
  });
  listen(client, 'status', (/** @type {{id: string, peer: string, status: string}} */ update) => {
    updateStatus(update);
    refreshList();
  });
  listen(client, 'typing', (/** @type {{peer: string, started: boolean}} */ { peer, started }) => {
    noteTyping(peer, started);
  });
  listen(client, 'timer', (/** @type {{peer: string, timerSeconds: number}} */ { peer, timerSeconds }) => {
    if (peer === current) timerSelect.value = String(timerSeconds);
  });
  listen(client, 'expired', (/** @type {{peer: string, ids: string[]}} */ { peer, ids }) => {
    media().then(({ releaseUrls }) => releaseUrls(ids), reportError);
    if (peer === current) {
      for (const id of ids) {
        nodes.get(id)?.remove();
        nodes.delete(id);
      }
    }
    refreshList();
  });
  listen(client, 'device-refused', (/** @type {{username: string, deviceId: number, reason: string}} */ d) => {
    noteRefused(d.username, d.deviceId, d.reason);
  });
  listen(client, 'history-progress', (/** @type {{received: number, total: number}} */ { received, total }) => {
    if (received < total) showNotice(`Receiving your earlier messages from your other device… ${received} of ${total}`, 0);
  });
  listen(client, 'history-imported', (/** @type {{count: number}} */ { count }) => {
    showNotice(
      count
        ? `Imported ${count} earlier message${count === 1 ? '' : 's'} from your other device.`
        : 'Your other device sent no earlier messages.',
    );
    refreshList();
    if (current && main.dataset.view === 'chat') {
      nodes = new Map();
      messagesList.replaceChildren();
      void openChat(current);
    }
  });
  listen(client, 'identity-changed', (/** @type {{username: string}} */ { username }) => {
    warnIdentityChanged(username);
  });
  listen(client, 'connection', (/** @type {{state: string}} */ { state }) => {
    showConnection(state);
    if (state === 'online') void flushWaiting();
  });
  listen(client, 'error', reportError);

  document.addEventListener('visibilitychange', markReadIfSeen);
  window.addEventListener('beforeunload', (event) => {
    if (waiting.length) event.preventDefault(); // unsent messages would be lost
  });
  window.addEventListener('hashchange', route);

  // Connect first: on a slow link the handshake is the longest wait, and it needs nothing
  // drawn. The client reconnects by itself after a drop ('connection' events).
  showConnection(client.connectionState ?? 'offline');
  (async () => client.connect())().catch(reportError);
  route();
  try {
    renderConversations(await client.conversations());
  } catch (error) {
    reportError(error);
  }
}
