// @ts-check
/**
 * The sign-up and log-in pages. Sign-up makes the account's keys in this browser (a few
 * seconds on a slow phone: a progress bar shows the prekeys being made) and uploads only
 * the public halves.
 */

import { byId, listen, show } from './dom.js';
import { describeError } from './errors.js';
import { linkSection } from './link.js';

const CHAT_URL = '/chat';
const USERNAME = /^[a-z][a-z0-9_]{2,31}$/;

/**
 * @param {any} client a WebClient
 */
export function signupPage(client) {
  const form = /** @type {HTMLFormElement} */ (byId('signup-form'));
  const error = byId('form-error');
  const progress = byId('keygen');
  const bar = /** @type {HTMLProgressElement} */ (byId('keygen-bar'));
  const label = byId('keygen-label');

  listen(client, 'progress', (/** @type {{done: number, total: number}} */ { done, total }) => {
    bar.max = total || 1;
    bar.value = done;
    label.textContent = `Generating your keys in this browser… ${done} of ${total}`;
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const username = /** @type {HTMLInputElement} */ (byId('username')).value.trim().toLowerCase();
    const password = /** @type {HTMLInputElement} */ (byId('password')).value;
    const deviceName = /** @type {HTMLInputElement} */ (byId('device-name')).value.trim() || 'Web browser';
    const accepted = /** @type {HTMLInputElement} */ (byId('accept')).checked;
    // The region's age rule: a birth date if given (under the age of self-consent), else
    // the ticked box states the person is of that age. The ticked purposes are consents.
    const birthDate = /** @type {HTMLInputElement} */ (byId('birth-date')).value || null;
    const consents = [...form.querySelectorAll('input[name="consent"]:checked')].map(
      (box) => /** @type {HTMLInputElement} */ (box).value,
    );
    if (!USERNAME.test(username)) {
      error.textContent = describeError({ code: 'invalid_username' });
      return;
    }
    if (password.length < 8) {
      error.textContent = 'Choose a password of at least 8 characters.';
      return;
    }
    if (!accepted) {
      error.textContent = 'Please read the privacy notice and tick the box to continue.';
      return;
    }
    for (const box of form.querySelectorAll('input[name="consent"][required]')) {
      if (!(/** @type {HTMLInputElement} */ (box).checked)) {
        error.textContent = 'Using Sealpost in this region needs the consent marked as required.';
        return;
      }
    }
    setBusy(form, true);
    show(progress, true);
    try {
      await client.register(username, password, {
        deviceName,
        birthDate,
        ageConfirmed: birthDate ? null : true,
        consents,
      });
      location.assign(CHAT_URL);
    } catch (failure) {
      error.textContent = describeError(failure);
      show(progress, false);
      setBusy(form, false);
    }
  });
}

/**
 * @param {any} client a WebClient
 */
export function loginPage(client) {
  const form = /** @type {HTMLFormElement} */ (byId('login-form'));
  const error = byId('form-error');
  // A browser that already holds a device logs in; one that holds none may be linked.
  if (client.linked) show(byId('link'), false);
  else linkSection(client, () => location.assign(CHAT_URL));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const username = /** @type {HTMLInputElement} */ (byId('username')).value.trim().toLowerCase();
    const password = /** @type {HTMLInputElement} */ (byId('password')).value;
    if (!username || !password) {
      error.textContent = 'Enter your username and password.';
      return;
    }
    setBusy(form, true);
    try {
      await client.login(username, password);
      location.assign(CHAT_URL);
    } catch (failure) {
      error.textContent = describeError(failure);
      setBusy(form, false);
    }
  });
}

/**
 * @param {HTMLFormElement} form
 * @param {boolean} busy
 */
function setBusy(form, busy) {
  form.setAttribute('aria-busy', String(busy));
  for (const control of form.elements) {
    if (control instanceof HTMLInputElement || control instanceof HTMLButtonElement) control.disabled = busy;
  }
}
