// @ts-check
/**
 * The only way the UI puts anything on the page. Text goes in through textContent and
 * attribute values through setAttribute: nothing here ever parses a string as HTML, so a
 * message, a username or an error text is shown as the characters it is, whatever they
 * are. No API that parses HTML is used anywhere in the browser code (tests/web checks).
 */

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`page has no #${id}`);
  return node;
}

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {{class?: string, text?: string, attrs?: Record<string, string>, data?: Record<string, string>}} [props]
 * @param {(Node | null | undefined)[]} [children]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (props.class) node.className = props.class;
  if (props.text !== undefined) node.textContent = props.text;
  for (const [name, value] of Object.entries(props.attrs ?? {})) node.setAttribute(name, value);
  for (const [name, value] of Object.entries(props.data ?? {})) node.dataset[name] = value;
  for (const child of children) if (child) node.append(child);
  return node;
}

/**
 * @param {Element} node
 * @param {boolean} visible
 */
export function show(node, visible) {
  if (node instanceof HTMLElement) node.hidden = !visible;
}

/**
 * Set the text of every element matching `selector` (e.g. each place a name appears).
 * @param {string} selector
 * @param {string} text
 */
export function fillAll(selector, text) {
  for (const node of document.querySelectorAll(selector)) node.textContent = text;
}

/**
 * Subscribe to one of the client's events, whichever event API it has: an emitter's
 * `on(name, fn)` or an EventTarget's CustomEvent with the payload in `detail`.
 * @param {any} client
 * @param {string} name
 * @param {(payload: any) => void} handler
 */
export function listen(client, name, handler) {
  if (typeof client.on === 'function') {
    client.on(name, handler);
  } else {
    client.addEventListener(name, (/** @type {any} */ event) => handler(event.detail ?? event));
  }
}

/**
 * Milliseconds since the epoch (or a Date, or an ISO string) as a short local time.
 * @param {unknown} when
 */
export function formatTime(when) {
  if (when === undefined || when === null) return '';
  const date = when instanceof Date ? when : new Date(/** @type {any} */ (when));
  if (Number.isNaN(date.getTime())) return '';
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleDateString([], { month: 'short', day: 'numeric' });
}
