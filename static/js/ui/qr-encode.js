// @ts-check
// The QR encoder on its own, so that qr.js loads it as a chunk when a code is first drawn.
export { encode } from 'uqr';
