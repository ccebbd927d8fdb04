// @ts-check
/**
 * The Devices pane of the chat page: the account's devices (name, last seen, which one is
 * this browser), rename and remove (revoke: a new signed device list without it), and
 * "Link a new device": paste the link code the new device shows, confirm what is being let
 * in (the fingerprint both devices show, and how much history it gets), then the new device
 * is let in and, once it has joined, sent the chosen amount of recent messages.
 */

import { byId, el, formatTime } from './dom.js';
import { describeError } from './errors.js';

/** @type {Record<string, string>} what a link code that does not read means */
const BAD_CODE = {
  malformed: 'That does not read as a Sealpost link code: it starts with “sealpost-link:”. Copy it again.',
  truncated: 'That link code is cut short. Copy all of it.',
  trailing_bytes: 'That link code is too long. Copy exactly what the new device shows.',
  unsupported_version: 'That link code comes from a newer version of Sealpost.',
  bad_key: 'That link code is damaged. Copy it again.',
};

/**
 * Ask a yes/no question in the page's confirmation dialog; resolves true for yes.
 * @param {string} title
 * @param {Node[]} body
 * @param {string} yes the label of the button that goes ahead
 * @returns {Promise<boolean>}
 */
export function confirmDialog(title, body, yes) {
  const modal = byId('confirm-modal');
  const main = byId('main');
  byId('confirm-title').textContent = title;
  byId('confirm-body').replaceChildren(...body);
  const yesButton = byId('confirm-yes');
  const noButton = byId('confirm-no');
  yesButton.textContent = yes;
  modal.hidden = false;
  main.inert = true;
  noButton.focus();
  return new Promise((resolve) => {
    /** @param {boolean} answer */
    const answer = (answer) => {
      modal.hidden = true;
      main.inert = false;
      yesButton.removeEventListener('click', onYes);
      noButton.removeEventListener('click', onNo);
      resolve(answer);
    };
    const onYes = () => answer(true);
    const onNo = () => answer(false);
    yesButton.addEventListener('click', onYes);
    noButton.addEventListener('click', onNo);
  });
}

/** @param {number} bytes */
function size(bytes) {
  return bytes >= 1_000_000 ? `${bytes / 1_000_000} MB` : `${Math.round(bytes / 1000)} KB`;
}

/**
 * @param {any} client a WebClient, registered
 * @param {{reportError: (error: unknown) => void, onRevokedSelf: () => void}} hooks
 */
export function devicesPane(client, { reportError, onRevokedSelf }) {
  const list = byId('devices');
  const error = byId('devices-error');
  const form = /** @type {HTMLFormElement} */ (byId('link-new-form'));
  const codeInput = /** @type {HTMLTextAreaElement} */ (byId('link-new-code'));
  const status = byId('link-new-status');
  const linkError = byId('link-new-error');
  let loading = 0;

  async function refresh() {
    const mine = ++loading;
    error.textContent = '';
    try {
      const devices = await client.devices();
      if (mine !== loading) return;
      list.replaceChildren(...devices.map(deviceItem));
    } catch (failure) {
      if (mine === loading) error.textContent = describeError(failure);
    }
  }

  /** @param {{deviceId: number, name: string, createdAt: string|null, lastSeenAt: string|null, current: boolean, listed: boolean}} device */
  function deviceItem(device) {
    const name = el('span', { class: 'device-name', text: device.name || `Device ${device.deviceId}` });
    const facts = [
      device.current ? 'This browser' : `Last seen ${device.lastSeenAt ? formatTime(device.lastSeenAt) : 'never'}`,
      device.createdAt ? `added ${formatTime(device.createdAt)}` : '',
      `device ${device.deviceId}`,
    ].filter(Boolean);
    const rename = el('button', { class: 'link', text: 'Rename', attrs: { type: 'button', 'data-action': 'rename' } });
    const revoke = el('button', { class: 'link danger', text: 'Remove', attrs: { type: 'button', 'data-action': 'revoke' } });
    const item = el(
      'li',
      { class: 'device', data: { deviceId: String(device.deviceId), ...(device.current ? { current: 'true' } : {}) } },
      [
        el('div', { class: 'device-head' }, [name, device.current ? el('span', { class: 'tag', text: 'this browser' }) : null]),
        el('p', { class: 'hint', text: facts.join(' · ') }),
        device.listed
          ? null
          : el('p', { class: 'warning', text: 'Not in your account’s signed device list: nothing is encrypted to it.' }),
        el('div', { class: 'actions' }, [rename, revoke]),
      ],
    );
    rename.addEventListener('click', () => startRename(item, device));
    revoke.addEventListener('click', () => void confirmRevoke(device));
    return item;
  }

  /**
   * @param {HTMLLIElement} item
   * @param {{deviceId: number, name: string}} device
   */
  function startRename(item, device) {
    const input = el('input', { attrs: { maxlength: '64', 'aria-label': `New name for device ${device.deviceId}` } });
    input.value = device.name;
    const save = el('button', { text: 'Save', attrs: { type: 'submit' } });
    const cancel = el('button', { class: 'secondary', text: 'Cancel', attrs: { type: 'button' } });
    const renameForm = el('form', { class: 'rename', attrs: { method: 'post' } }, [input, save, cancel]);
    item.append(renameForm);
    input.focus();
    cancel.addEventListener('click', () => renameForm.remove());
    renameForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      save.disabled = true;
      try {
        await client.renameDevice(device.deviceId, input.value);
        await refresh();
      } catch (failure) {
        error.textContent = describeError(failure);
        save.disabled = false;
      }
    });
  }

  /** @param {{deviceId: number, name: string, current: boolean}} device */
  async function confirmRevoke(device) {
    const body = [
      el('p', {
        text: device.current
          ? 'This is this browser: once removed it can no longer send or receive, and its keys here are useless.'
          : `“${device.name}” will no longer receive your messages or be able to send as you. Your account’s signed device list is updated, so your contacts stop encrypting to it.`,
      }),
    ];
    if (!(await confirmDialog(`Remove device ${device.deviceId}?`, body, 'Remove it'))) return;
    try {
      const self = await client.revokeDevice(device.deviceId);
      if (self) onRevokedSelf();
      else await refresh();
    } catch (failure) {
      error.textContent = describeError(failure);
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void approve();
  });

  async function approve() {
    linkError.textContent = '';
    status.textContent = '';
    const text = codeInput.value;
    let preview;
    try {
      preview = client.previewLink(text);
    } catch (failure) {
      const code = /** @type {any} */ (failure)?.code ?? '';
      linkError.textContent = BAD_CODE[code] ? `${BAD_CODE[code]} (${code})` : describeError(failure);
      return;
    }
    const chosen = /** @type {HTMLInputElement | null} */ (form.querySelector('input[name="history"]:checked'));
    const historyBytes = Number(chosen?.value ?? 0);
    const body = [
      el('p', {
        text: `A new device asks to join ${preview.username}. Once linked it can read every new message to and from you, and send messages as you.`,
      }),
      el('p', { class: 'fingerprint' }, [
        document.createTextNode('Fingerprint: '),
        el('strong', { text: preview.fingerprint, attrs: { id: 'confirm-fingerprint' } }),
      ]),
      el('p', { class: 'hint', text: 'The new device shows a fingerprint beside its code: it must be the same.' }),
      el('p', {
        text: historyBytes
          ? `It will also get up to ${size(historyBytes)} of your recent messages.`
          : 'It will get no earlier messages.',
      }),
      el('p', { class: 'warning', text: 'Only continue for a device you hold yourself. Sealpost never asks you to link a device for someone else.' }),
    ];
    if (!(await confirmDialog('Link a new device?', body, 'Link it'))) {
      status.textContent = 'Not linked.';
      return;
    }
    setBusy(true);
    status.textContent = 'Approved: waiting for the new device to register…';
    try {
      const result = await client.approveLink(text, {
        historyBytes,
        onStage: (/** @type {string} */ stage, /** @type {any} */ detail) => {
          if (stage === 'joined') status.textContent = `Device ${detail.deviceIds.join(', ')} joined.`;
          if (stage === 'history') status.textContent = `Device joined. Sending ${detail.messages} recent messages…`;
        },
      });
      const history = historyBytes
        ? ` and sent it ${result.historyMessages} recent message${result.historyMessages === 1 ? '' : 's'}`
        : '';
      status.textContent = `Linked device ${result.deviceIds.join(', ')}${history}.`;
      codeInput.value = '';
      await refresh();
    } catch (failure) {
      status.textContent = '';
      linkError.textContent = describeError(failure);
    } finally {
      setBusy(false);
    }
  }

  /** @param {boolean} busy */
  function setBusy(busy) {
    form.setAttribute('aria-busy', String(busy));
    for (const control of form.elements) {
      if (control instanceof HTMLInputElement || control instanceof HTMLButtonElement || control instanceof HTMLTextAreaElement) {
        control.disabled = busy;
      }
    }
  }

  return {
    /** Draw the pane afresh (it is opened). */
    open() {
      void refresh().catch(reportError);
    },
  };
}
