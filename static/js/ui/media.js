// @ts-check
/**
 * Files, photos and voice messages in a conversation: the thumbnail a photo travels with
 * (made here, from the picked file), the bubble that shows an attachment (the thumbnail at
 * once, then the photo, the voice message or a download link once the blob is fetched,
 * checked and decrypted), and the voice recorder.
 *
 * Decrypted files reach the page only as object URLs (blob:), which the CSP allows for
 * img-src and media-src and nothing else. A blob that fails its digest or a chunk's tag
 * is shown as undecryptable, never handed to an <img> or <audio>; one the server no
 * longer has, as expired.
 */

// No static import of the page's other modules: they are in the first bundle, and a
// module shared with it would become a chunk of its own that every page load waits for.
// The chat page hands them in (`Helpers`).

/**
 * @typedef {{el: typeof import('./dom.js').el, describeError: typeof import('./errors.js').describeError,
 *   formatBytes: typeof import('./format.js').formatBytes,
 *   formatDuration: typeof import('./format.js').formatDuration}} Helpers
 */

const THUMBNAIL_EDGE = 320; // pixels, the longer side
const THUMBNAIL_MAX_BYTES = 30 * 1024;
const AUTO_DOWNLOAD_BYTES = 25 * 1024 * 1024; // photos and voice messages fetched unasked up to this
export const VOICE_TYPE = 'audio/webm;codecs=opus';

/** @typedef {import('../app/client.js').AttachmentInfo} AttachmentInfo */

/** @type {Map<string, string>} object URLs by message id (and `thumb:` id), made once */
const urls = new Map();

/**
 * @param {string} key
 * @param {Blob} blob
 */
function urlFor(key, blob) {
  let url = urls.get(key);
  if (!url) {
    url = URL.createObjectURL(blob);
    urls.set(key, url);
  }
  return url;
}

/** Forget the object URLs of messages that are gone (disappeared). @param {string[]} ids */
export function releaseUrls(ids) {
  for (const id of ids) {
    for (const key of [id, `thumb:${id}`]) {
      const url = urls.get(key);
      if (url) URL.revokeObjectURL(url);
      urls.delete(key);
    }
  }
}

/**
 * A photo's thumbnail: at most THUMBNAIL_EDGE pixels on its longer side, as a JPEG of at
 * most ~30 KB (the quality lowered, then the size, until it fits), with the photo's own
 * width and height. Null for anything the browser cannot decode as an image.
 * @param {Blob} file
 * @returns {Promise<{thumbnail: Uint8Array, width: number, height: number} | null>}
 */
export async function makeThumbnail(file) {
  if (!file.type.startsWith('image/')) return null;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return null; // not an image this browser decodes: sent as a plain file
  }
  const { width, height } = bitmap;
  try {
    for (let edge = THUMBNAIL_EDGE; edge >= 64; edge = Math.round(edge * 0.7)) {
      const scale = Math.min(1, edge / Math.max(width, height));
      const canvas = document.createElement('canvas');
      canvas.width = Math.max(1, Math.round(width * scale));
      canvas.height = Math.max(1, Math.round(height * scale));
      const context = canvas.getContext('2d');
      if (!context) return null;
      context.fillStyle = '#fff'; // transparency becomes white, not black
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      for (const quality of [0.7, 0.5, 0.35]) {
        const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', quality));
        if (blob && blob.size <= THUMBNAIL_MAX_BYTES) {
          return { thumbnail: new Uint8Array(await blob.arrayBuffer()), width, height };
        }
      }
    }
    return { thumbnail: new Uint8Array(0), width, height };
  } finally {
    bitmap.close();
  }
}

/**
 * The body of an attachment's bubble. Photos and voice messages are fetched at once (up
 * to AUTO_DOWNLOAD_BYTES), other files when asked. `li` is the message's element: its
 * `data-attachment` says where the attachment is (thumbnail, loading, ready, expired,
 * undecryptable, failed), for the tests and the styles.
 * @param {any} client a WebClient
 * @param {{id: string, attachment?: AttachmentInfo}} message
 * @param {HTMLElement} li
 * @param {Helpers} helpers
 */
export function attachmentBody(client, message, li, { el, describeError, formatBytes, formatDuration }) {
  const info = /** @type {AttachmentInfo} */ (message.attachment);
  const box = el('div', { class: 'attachment' });
  const image = info.contentType.startsWith('image/') && !info.voice;
  const voice = info.voice || info.contentType.startsWith('audio/');
  li.dataset.attachment = 'thumbnail';

  /** @param {string} state @param {string} [text] */
  const note = (state, text) => {
    li.dataset.attachment = state;
    const bad = state === 'undecryptable' || state === 'failed';
    return el('p', { class: bad ? 'note bad' : 'note', text });
  };

  /** @param {any} error */
  const failed = (error) => {
    const code = error?.code;
    if (code === 'attachment_expired' || code === 'unknown_attachment') {
      return note('expired', `${label()} expired: the server no longer has it.`);
    }
    if (code === 'decrypt_failed') {
      return note('undecryptable', `${label()} could not be decrypted: it was damaged or tampered with on the way, so it is not shown.`);
    }
    return note('failed', `${label()} could not be downloaded. ${describeError(error)}`);
  };
  const label = () => (image ? 'This photo' : voice ? 'This voice message' : `“${info.fileName || 'file'}”`);

  /** @param {HTMLElement} node */
  const put = (node) => box.replaceChildren(node, ...captionNodes());
  const captionNodes = () => (info.caption ? [el('p', { class: 'text', text: info.caption })] : []);

  const fetchIt = async () => {
    li.dataset.attachment = 'loading';
    try {
      return await client.download(message.id);
    } catch (error) {
      put(failed(error));
      return null;
    }
  };

  if (image) {
    const img = el('img', { class: 'media', attrs: { alt: info.fileName || 'Photo' } });
    if (info.width && info.height) {
      img.width = Math.min(info.width, 260);
      img.height = Math.round((img.width * info.height) / info.width);
    }
    if (info.thumbnail.length) {
      img.src = urlFor(`thumb:${message.id}`, new Blob([/** @type {BlobPart} */ (info.thumbnail)], { type: 'image/jpeg' }));
      img.dataset.source = 'thumbnail';
    }
    put(img);
    if (info.size <= AUTO_DOWNLOAD_BYTES) {
      void fetchIt().then((file) => {
        if (!file) return;
        img.src = urlFor(message.id, file);
        img.dataset.source = 'full';
        li.dataset.attachment = 'ready';
      });
    }
    return box;
  }

  if (voice) {
    const waiting = el('p', { class: 'note', text: `♪ Voice message ${formatDuration(info.durationMs)}` });
    put(waiting);
    if (info.size <= AUTO_DOWNLOAD_BYTES) {
      void fetchIt().then((file) => {
        if (!file) return;
        const audio = el('audio', { class: 'media', attrs: { controls: '', preload: 'metadata' } });
        audio.src = urlFor(message.id, file);
        put(el('div', {}, [audio, el('span', { class: 'hint', text: ` ${formatDuration(info.durationMs)}` })]));
        li.dataset.attachment = 'ready';
      });
    }
    return box;
  }

  const name = info.fileName || 'file';
  const button = el('button', { class: 'secondary', text: 'Download', attrs: { type: 'button' } });
  const row = el('div', { class: 'file' }, [
    el('span', { class: 'name', text: name }),
    el('span', { class: 'size', text: formatBytes(info.size) }),
    button,
  ]);
  button.addEventListener('click', async () => {
    button.disabled = true;
    button.textContent = 'Downloading…';
    const file = await fetchIt();
    if (!file) return;
    const link = el('a', { class: 'save', text: `Save ${name}`, attrs: { href: urlFor(message.id, file), download: name } });
    button.replaceWith(link);
    li.dataset.attachment = 'ready';
    link.click();
  });
  put(row);
  return box;
}

/**
 * Records a voice message with MediaRecorder (Opus in WebM where the browser has it).
 * `start` asks for the microphone: a refusal throws an Error with `code` mic_denied or
 * mic_missing and a message to show.
 */
export class VoiceRecorder {
  constructor() {
    /** @type {MediaRecorder | null} */
    this._recorder = null;
    /** @type {MediaStream | null} */
    this._stream = null;
    /** @type {Blob[]} */
    this._parts = [];
    this.startedAt = 0;
  }

  get recording() {
    return this._recorder !== null;
  }

  async start() {
    if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === 'undefined') {
      throw Object.assign(new Error('This browser cannot record audio.'), { code: 'mic_missing' });
    }
    try {
      this._stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      const name = /** @type {any} */ (error)?.name;
      if (name === 'NotAllowedError' || name === 'SecurityError') {
        throw Object.assign(
          new Error('Microphone access was denied. Allow the microphone for this site in the browser’s settings to record voice messages.'),
          { code: 'mic_denied' },
        );
      }
      throw Object.assign(new Error('No microphone was found.'), { code: 'mic_missing' });
    }
    const mimeType = MediaRecorder.isTypeSupported(VOICE_TYPE) ? VOICE_TYPE : '';
    this._recorder = new MediaRecorder(this._stream, mimeType ? { mimeType } : {});
    this._parts = [];
    this._recorder.addEventListener('dataavailable', (event) => {
      if (event.data.size) this._parts.push(event.data);
    });
    this._recorder.start(250);
    this.startedAt = performance.now();
  }

  /** Stop and return the recording. @returns {Promise<{blob: Blob, durationMs: number}>} */
  stop() {
    const recorder = this._recorder;
    if (!recorder) return Promise.reject(new Error('not recording'));
    const durationMs = Math.round(performance.now() - this.startedAt);
    return new Promise((resolve) => {
      recorder.addEventListener('stop', () => {
        const type = recorder.mimeType || 'audio/webm';
        resolve({ blob: new Blob(this._parts, { type }), durationMs });
        this._release();
      });
      recorder.stop();
    });
  }

  cancel() {
    const recorder = this._recorder;
    if (recorder && recorder.state !== 'inactive') recorder.stop();
    this._release();
  }

  _release() {
    for (const track of this._stream?.getTracks() ?? []) track.stop();
    this._stream = null;
    this._recorder = null;
    this._parts = [];
  }
}
