// @ts-check
/**
 * The web client's one script (bundled by esbuild into static/dist/sealpost.js). Each page
 * says which it is in #app[data-page]; this opens the browser's WebClient (keys and
 * messages in IndexedDB) and hands it to that page's UI. Pages whose place depends on
 * whether this browser holds a device send the visitor to the right one.
 */

import { WebClient } from './app/index.js';
import { signupPage, loginPage } from './ui/auth.js';
import { chatPage } from './ui/chat.js';
import { describeError } from './ui/errors.js';

async function main() {
  const app = document.getElementById('app');
  const page = app?.dataset.page;
  if (!app || !page || page === 'security') return;
  let client;
  try {
    client = await WebClient.open({ baseUrl: location.origin });
  } catch (error) {
    fatal(error);
    return;
  }
  // registered: this browser holds a device and is logged in; linked: it holds one, maybe
  // logged out. One browser holds at most one account.
  if (page === 'signup') {
    if (client.registered) return location.replace('/chat');
    if (client.linked) return location.replace('/login');
    signupPage(client);
  } else if (page === 'login') {
    if (client.registered) return location.replace('/chat');
    loginPage(client);
  } else if (page === 'chat') {
    if (!client.registered) return location.replace(client.linked ? '/login' : '/signup');
    await chatPage(client);
  }
  // The forms' buttons start disabled, so that nothing typed before the script runs can
  // be submitted as a plain form (a password or a message in a URL).
  for (const button of document.querySelectorAll('button[data-needs-script]')) {
    /** @type {HTMLButtonElement} */ (button).disabled = false;
  }
  app.dataset.ready = 'true';
}

/** @param {unknown} error */
function fatal(error) {
  const note = document.createElement('p');
  note.className = 'error banner';
  note.setAttribute('role', 'alert');
  note.textContent = `Sealpost cannot start in this browser: ${describeError(error)}`;
  document.getElementById('app')?.prepend(note);
}

void main();
