// @ts-check
/**
 * The group dialogs, loaded when first opened (a chunk of its own, to keep the first load
 * small): "New group" (a name and the members' usernames) and a group's members (admins
 * add and remove; anyone may leave). The work is the client's (app/groups.js); this only
 * asks and shows.
 */

import { describeError } from './errors.js';
import { el } from './dom.js';

/**
 * A modal with `content` and a Close button; resolves when it closes.
 * @param {string} title
 * @param {(close: () => void, error: (text: string) => void) => Node[]} build
 */
function modal(title, build) {
  const error = el('p', { class: 'error', attrs: { role: 'alert' } });
  const box = el('div', { class: 'modal-box' });
  const root = el('div', { class: 'modal', attrs: { role: 'dialog', 'aria-modal': 'true', 'aria-label': title } }, [box]);
  const close = () => root.remove();
  const closeButton = el('button', { class: 'secondary', text: 'Close', attrs: { type: 'button' } });
  closeButton.addEventListener('click', close);
  root.addEventListener('keydown', (event) => {
    if (/** @type {KeyboardEvent} */ (event).key === 'Escape') close();
  });
  box.append(el('h2', { text: title }), ...build(close, (text) => (error.textContent = text)), error, el('div', { class: 'actions' }, [closeButton]));
  document.body.append(root);
  root.querySelector('input')?.focus();
  return root;
}

/** @param {string} text */
const names = (text) => text.split(/[\s,]+/).map((n) => n.trim()).filter(Boolean);

/**
 * "New group": POST /api/v1/groups, then the name and our key to every member.
 * @param {any} client
 * @param {{onCreated: (id: string) => void}} options
 */
export function newGroupDialog(client, { onCreated }) {
  return modal('New group', (close, error) => {
    const name = el('input', { attrs: { id: 'group-name', name: 'name', required: '', maxlength: '256', placeholder: 'Group name' } });
    const members = el('input', { attrs: { id: 'group-members', name: 'members', placeholder: 'Usernames, separated by commas', autocapitalize: 'none', spellcheck: 'false' } });
    const submit = el('button', { text: 'Create', attrs: { type: 'submit', id: 'group-create' } });
    const form = el('form', { class: 'group-form' }, [
      el('label', { text: 'Name', attrs: { for: 'group-name' } }), name,
      el('label', { text: 'Members', attrs: { for: 'group-members' } }), members,
      submit,
    ]); // prettier-ignore
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      submit.toggleAttribute('disabled', true);
      error('');
      try {
        const id = await client.groups.create(/** @type {HTMLInputElement} */ (name).value, names(/** @type {HTMLInputElement} */ (members).value));
        close();
        onCreated(id);
      } catch (e) {
        error(describeError(e));
        submit.toggleAttribute('disabled', false);
      }
    });
    return [form];
  });
}

/**
 * A group's members; an admin adds and removes, anyone leaves.
 * @param {any} client
 * @param {string} peer `group:<id>`
 */
export async function membersDialog(client, peer) {
  const group = await client.groups.fetch(peer).catch(() => client.groups.get(peer));
  if (!group) return null;
  return modal(group.name || 'Group', (close, error) => {
    /** @param {() => Promise<unknown>} action */
    const run = async (action) => {
      error('');
      try {
        await action();
        close();
      } catch (e) {
        error(describeError(e));
      }
    };
    const list = el('ul', { class: 'members' });
    for (const member of group.members) {
      const item = el('li', { text: `${member.username}${member.admin ? ' (admin)' : ''} ` });
      if (group.admin && member.username !== client.username) {
        const remove = el('button', { class: 'link', text: 'Remove', attrs: { type: 'button', 'data-remove': member.username } });
        remove.addEventListener('click', () => run(() => client.groups.remove(peer, member.username)));
        item.append(remove);
      }
      list.append(item);
    }
    /** @type {HTMLElement[]} */
    const parts = [list];
    if (group.admin) {
      const input = el('input', { attrs: { id: 'group-add', placeholder: 'Usernames to add', autocapitalize: 'none', spellcheck: 'false' } });
      const form = el('form', { class: 'group-form' }, [input, el('button', { text: 'Add', attrs: { type: 'submit' } })]);
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        run(() => client.groups.add(peer, names(/** @type {HTMLInputElement} */ (input).value)));
      });
      parts.push(form);
    }
    if (group.member) {
      const leave = el('button', { class: 'secondary', text: 'Leave the group', attrs: { type: 'button' } });
      leave.addEventListener('click', () => run(() => client.groups.leave(peer)));
      parts.push(leave);
    }
    return parts;
  });
}
