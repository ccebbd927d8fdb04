// @ts-check
/**
 * The safety number's QR code, drawn in the browser onto a <canvas>. It encodes the raw
 * QR payload bytes (protocol/safety.py: version | fingerprint | fingerprint, 65 bytes) in
 * byte mode at error-correction level M, as the Python client's `safety-number --qr` does,
 * so either client can scan the other's code.
 */

export const QUIET_ZONE = 4; // modules of white border the QR specification asks for

/**
 * Draw the code; the encoder loads on first use (a chunk of its own, kept out of the
 * page's first bundle). The canvas has `data-modules` once it is drawn.
 * @param {HTMLCanvasElement} canvas
 * @param {Uint8Array} payload
 * @param {number} [cssSize] rendered width and height in CSS pixels
 */
export async function drawQr(canvas, payload, cssSize = 216) {
  const { encode } = await import('./qr-encode.js');
  const qr = encode(Array.from(payload), { ecc: 'M', border: QUIET_ZONE });
  const modules = qr.size; // includes the quiet zone
  // Whole device pixels per module keep the edges sharp on any screen density.
  const scale = Math.max(1, Math.floor((cssSize * (window.devicePixelRatio || 1)) / modules));
  canvas.width = modules * scale;
  canvas.height = modules * scale;
  canvas.dataset.modules = String(modules);
  canvas.dataset.version = String(qr.version);
  // What the code says, for people and tests comparing it with another client's.
  canvas.dataset.payload = Array.from(payload, (byte) => byte.toString(16).padStart(2, '0')).join('');
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = '#000';
  for (let y = 0; y < modules; y++) {
    const row = qr.data[y];
    for (let x = 0; x < modules; x++) {
      if (row[x]) ctx.fillRect(x * scale, y * scale, scale, scale);
    }
  }
}
