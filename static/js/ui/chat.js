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
 *   serverTime?: number|null, status: string, kind?: string, code?: string, senderDevice?: number}} Message
 */

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

  /** @param {'list'|'chat'|'safety'|'devices'} view */
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

  /** @param {{peer: string, lastMessage?: Message|null, unread: number}[]} conversations most recent first */
  function renderConversations(conversations) {
    let totalUnread = 0;
    const items = conversations.map(({ peer, lastMessage, unread }) => {
      totalUnread += unread;
      const badge = el('span', {
        class: 'badge',
        text: String(unread),
        attrs: { 'aria-label': `${unread} unread` },
        data: { unread: String(unread) },
      });
      badge.hidden = !unread;
      const link = el('a', { class: 'conv', attrs: { href: `#with=${encodeURIComponent(peer)}` } }, [
        el('span', { class: 'peer', text: peer }),
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
    const text = (message.text ?? '').replace(/\s+/g, ' ').slice(0, 80);
    return message.direction === 'out' ? `You: ${text}` : text;
  }

  // --- one conversation ------------------------------------------------------------------

  /** @param {string} peer */
  async function openChat(peer) {
    peer = peer.trim().toLowerCase();
    const switching = current !== peer || main.dataset.view !== 'chat';
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
    try {
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
  function messageNode(message) {
    const undecryptable = message.kind === 'undecryptable';
    const body = el('p', {
      class: undecryptable ? 'text undecryptable' : 'text',
      text: undecryptable ? UNDECRYPTABLE_TEXT : (message.text ?? ''),
    });
    const meta = el('span', { class: 'meta' }, [el('time', { text: formatTime(message.sentAt ?? message.serverTime) })]);
    if (message.direction === 'out') meta.append(tickNode(message.status));
    return el(
      'li',
      {
        class: `msg ${message.direction}${undecryptable ? ' bad' : ''}`,
        data: { id: String(message.id), status: message.status, ...(undecryptable ? { kind: 'undecryptable' } : {}) },
      },
      [body, meta],
    );
  }

  /** @param {string} status */
  function tickNode(status) {
    const look = STATUS[status] ?? { tick: '', label: status };
    return el('span', {
      class: `tick ${status}`,
      text: look.tick,
      attrs: { title: look.label, 'aria-label': look.label },
    });
  }

  /** @param {{id: string, peer: string, status: string}} update */
  function updateStatus({ id, peer, status }) {
    if (peer !== current) return;
    const node = nodes.get(String(id));
    if (!node) return;
    node.dataset.status = status;
    node.querySelector('.tick')?.replaceWith(tickNode(status));
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
  byId('devices-back').addEventListener('click', () => go(''));
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
