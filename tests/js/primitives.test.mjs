// The primitive wrappers beyond Wycheproof: RFC test vectors, the places where noble and
// libsodium differ, AEAD tampering, ML-KEM input checks (tests/protocol/test_wycheproof.py
// has the Python counterparts).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ed25519 } from '@noble/curves/ed25519.js';

import { primitives as p } from '../../static/js/protocol/index.js';
import { hex, seededRandom, throwsSlug, unhex, utf8 } from './helpers.mjs';

test('Ed25519: RFC 8032 test 1, round trip, wrong lengths', () => {
  const seed = unhex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60');
  const publicKey = p.ed25519PublicKey(seed);
  assert.equal(hex(publicKey), 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
  const empty = p.ed25519Sign(seed, new Uint8Array(0));
  assert.equal(
    hex(empty),
    'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155' +
      '5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  );
  p.ed25519Verify(publicKey, new Uint8Array(0), empty);
  const message = utf8('an ordinary message');
  const signature = p.ed25519Sign(seed, message);
  assert.equal(signature.length, 64);
  p.ed25519Verify(publicKey, message, signature);
  throwsSlug(() => p.ed25519Verify(publicKey, utf8('an ordinary message!'), signature), 'bad_signature');
  throwsSlug(() => p.ed25519Verify(publicKey, message, signature.subarray(0, 63)), 'bad_signature');
  throwsSlug(() => p.ed25519Verify(publicKey.subarray(0, 31), message, signature), 'bad_key');
  throwsSlug(() => p.ed25519Sign(seed.subarray(0, 31), message), 'bad_key');
  throwsSlug(() => p.ed25519PublicKey(new Uint8Array(33)), 'bad_key');
});

// Two signatures that noble's strict mode ({ zip215: false }) accepts and libsodium (so
// the Python implementation) rejects. Both were made with ed25519.Point arithmetic and
// checked against protocol.primitives.ed25519_verify, which raised bad_signature.
const LIBSODIUM_REJECTS = [
  {
    why: 'R = rB + T for a torsion point T: the cofactored equation holds, the cofactorless one (libsodium) does not',
    publicKey: 'ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c',
    message: '746f7273696f6e',
    signature:
      '5ca082aea7a86fc60f2b9b6d72262e75b91e8f4bbd335e4d3ec51f6caafa272c' +
      '682510059dabdc7ca38d9cf073a2584e7e894ac95324a7c984efc2e8af15300d',
  },
  {
    why: 'R of small order under a mixed-order public key: libsodium rejects a small-order R outright',
    publicKey: 'd63c01223147541df4e170763e9e2788a8bf5971f52a93c5829dbe6f5ff6bba9',
    message: '736d616c6c20522031',
    signature:
      '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85' +
      '66be0572bff52b0d80df6d7d3913d6e8f68f4fcd05bac3b76964cea8eb64af0f',
  },
];

test('Ed25519: what noble strict accepts but libsodium rejects is rejected here too', () => {
  for (const c of LIBSODIUM_REJECTS) {
    const [publicKey, message, signature] = [unhex(c.publicKey), unhex(c.message), unhex(c.signature)];
    assert.equal(ed25519.verify(signature, message, publicKey, { zip215: false }), true, c.why);
    throwsSlug(() => p.ed25519Verify(publicKey, message, signature), 'bad_signature');
  }
});

test('Ed25519: a small-order public key and a non-canonical S are rejected', () => {
  const seed = new Uint8Array(32).fill(1);
  const message = utf8('m');
  const signature = p.ed25519Sign(seed, message);
  // identity point as the public key
  throwsSlug(() => p.ed25519Verify(unhex('01' + '00'.repeat(31)), message, signature), 'bad_signature');
  // S + L: same signature equation, non-canonical scalar
  const L = ed25519.Point.Fn.ORDER;
  let s = 0n;
  for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(signature[i]);
  s += L;
  const malleable = signature.slice();
  for (let i = 32; i < 64; i++) {
    malleable[i] = Number(s & 0xffn);
    s >>= 8n;
  }
  throwsSlug(() => p.ed25519Verify(p.ed25519PublicKey(seed), message, malleable), 'bad_signature');
});

test('X25519: RFC 7748 section 6.1 and bad inputs', () => {
  const alice = unhex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
  const bob = unhex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
  const alicePublic = p.x25519PublicKey(alice);
  const bobPublic = p.x25519PublicKey(bob);
  assert.equal(hex(alicePublic), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  assert.equal(hex(bobPublic), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
  const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
  assert.equal(hex(p.x25519(alice, bobPublic)), shared);
  assert.equal(hex(p.x25519(bob, alicePublic)), shared);
  throwsSlug(() => p.x25519(alice, new Uint8Array(32)), 'bad_key'); // the zero point: low order
  throwsSlug(() => p.x25519(alice, bobPublic.subarray(0, 31)), 'bad_key');
  throwsSlug(() => p.x25519(alice.subarray(0, 31), bobPublic), 'bad_key');
  throwsSlug(() => p.x25519PublicKey(new Uint8Array([...alice, 0])), 'bad_key');
});

test('XChaCha20-Poly1305: round trip; every flipped bit, truncation and wrong AD fails', () => {
  const random = seededRandom(1);
  const [key, nonce] = [random.bytes(32), random.bytes(24)];
  const [plaintext, aad] = [utf8('meet me at the usual place'), utf8('header v1')];
  const sealed = p.aeadEncrypt(key, nonce, plaintext, aad);
  assert.equal(sealed.length, plaintext.length + 16);
  assert.equal(hex(p.aeadDecrypt(key, nonce, sealed, aad)), hex(plaintext));
  const flipped = (/** @type {Uint8Array} */ data, /** @type {number} */ bit) => {
    const out = data.slice();
    out[bit >> 3] ^= 1 << (bit & 7);
    return out;
  };
  for (let bit = 0; bit < sealed.length * 8; bit++) {
    throwsSlug(() => p.aeadDecrypt(key, nonce, flipped(sealed, bit), aad), 'decrypt_failed');
  }
  for (let bit = 0; bit < aad.length * 8; bit++) {
    throwsSlug(() => p.aeadDecrypt(key, nonce, sealed, flipped(aad, bit)), 'decrypt_failed');
  }
  for (let bit = 0; bit < nonce.length * 8; bit++) {
    throwsSlug(() => p.aeadDecrypt(key, flipped(nonce, bit), sealed, aad), 'decrypt_failed');
  }
  for (let length = 0; length < sealed.length; length++) {
    throwsSlug(() => p.aeadDecrypt(key, nonce, sealed.subarray(0, length), aad), 'decrypt_failed');
  }
  throwsSlug(() => p.aeadDecrypt(key, nonce, new Uint8Array([...sealed, 0]), aad), 'decrypt_failed');
  throwsSlug(() => p.aeadDecrypt(key, nonce, sealed, new Uint8Array(0)), 'decrypt_failed');
  const empty = p.aeadEncrypt(key, nonce, new Uint8Array(0), new Uint8Array(0));
  assert.equal(empty.length, 16);
  assert.equal(p.aeadDecrypt(key, nonce, empty, new Uint8Array(0)).length, 0);
});

test('XChaCha20-Poly1305: wrong key and nonce lengths are bad_key', () => {
  const random = seededRandom(2);
  const [key, nonce] = [random.bytes(32), random.bytes(24)];
  const sealed = p.aeadEncrypt(key, nonce, utf8('x'), new Uint8Array(0));
  for (const badKey of [key.subarray(0, 31), new Uint8Array([...key, 0]), new Uint8Array(0)]) {
    throwsSlug(() => p.aeadEncrypt(badKey, nonce, utf8('x'), new Uint8Array(0)), 'bad_key');
    throwsSlug(() => p.aeadDecrypt(badKey, nonce, sealed, new Uint8Array(0)), 'bad_key');
  }
  for (const badNonce of [nonce.subarray(0, 12), new Uint8Array([...nonce, 0])]) {
    throwsSlug(() => p.aeadEncrypt(key, badNonce, utf8('x'), new Uint8Array(0)), 'bad_key');
    throwsSlug(() => p.aeadDecrypt(key, badNonce, sealed, new Uint8Array(0)), 'bad_key');
  }
});

test('ML-KEM-768: round trip, implicit rejection, deterministic encapsulation', () => {
  const seed = p.randomBytes(64);
  const publicKey = p.mlkem768PublicKey(seed);
  assert.equal(publicKey.length, 1184);
  const [ciphertext, shared] = p.mlkem768Encapsulate(publicKey);
  assert.equal(ciphertext.length, 1088);
  assert.equal(shared.length, 32);
  assert.equal(hex(p.mlkem768Decapsulate(seed, ciphertext)), hex(shared));
  // the wrong private key does not fail: implicit rejection gives an unrelated secret
  const other = p.mlkem768Decapsulate(p.randomBytes(64), ciphertext);
  assert.equal(other.length, 32);
  assert.notEqual(hex(other), hex(shared));
  // a given m makes encapsulation deterministic (FIPS 203 ML-KEM.Encaps_internal)
  const m = new Uint8Array(32).fill(9);
  assert.deepEqual(p.mlkem768Encapsulate(publicKey, m), p.mlkem768Encapsulate(publicKey, m));
  throwsSlug(() => p.mlkem768Encapsulate(publicKey, new Uint8Array(31)), 'invalid_value');
  throwsSlug(() => p.mlkem768Decapsulate(seed, ciphertext.subarray(1)), 'decrypt_failed');
  throwsSlug(() => p.mlkem768Decapsulate(seed.subarray(1), ciphertext), 'bad_key');
});

test('ML-KEM-768: malformed encapsulation keys are bad_key (FIPS 203 modulus check)', () => {
  const publicKey = p.mlkem768PublicKey(p.randomBytes(64));
  for (const wrong of [publicKey.subarray(0, 1183), new Uint8Array([...publicKey, 0]), new Uint8Array(0)]) {
    throwsSlug(() => p.mlkem768Encapsulate(wrong), 'bad_key');
  }
  const outOfRange = publicKey.slice(); // the first 12-bit coefficient set to q = 3329 (0xD01)
  outOfRange[0] = 0x01;
  outOfRange[1] = (outOfRange[1] & 0xf0) | 0x0d;
  throwsSlug(() => p.mlkem768Encapsulate(outOfRange), 'bad_key');
});

test('hashes, HKDF and helpers', () => {
  assert.equal(hex(p.sha256(new Uint8Array(0))), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  assert.equal(
    hex(p.sha512(utf8('abc'))),
    'ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a' +
      '2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f',
  );
  // RFC 4231 test case 2
  assert.equal(
    hex(p.hmacSha256(utf8('Jefe'), utf8('what do ya want for nothing?'))),
    '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
  );
  // RFC 5869 test case 1
  assert.equal(
    hex(p.hkdfSha256(unhex('0b'.repeat(22)), unhex('000102030405060708090a0b0c'), unhex('f0f1f2f3f4f5f6f7f8f9'), 42)),
    '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
  );
  // an absent salt is HashLen zero bytes
  assert.equal(
    hex(p.hkdfSha256(utf8('ikm'), new Uint8Array(0), utf8('info'), 42)),
    hex(p.hkdfSha256(utf8('ikm'), new Uint8Array(32), utf8('info'), 42)),
  );
  for (const bad of [0, -1, 255 * 32 + 1, 1.5]) {
    throwsSlug(() => p.hkdfSha256(utf8('ikm'), new Uint8Array(0), new Uint8Array(0), bad), 'invalid_value');
  }
  assert.equal(p.hkdfSha256(utf8('ikm'), new Uint8Array(0), new Uint8Array(0), 255 * 32).length, 255 * 32);
  assert.ok(p.constantTimeEqual(utf8('same'), utf8('same')));
  assert.ok(!p.constantTimeEqual(utf8('same'), utf8('sane')));
  assert.ok(!p.constantTimeEqual(utf8('same'), utf8('same!')));
  assert.equal(p.randomBytes(0).length, 0);
  assert.equal(p.randomBytes(33).length, 33);
  assert.equal(p.randomBytes(70000).length, 70000); // above getRandomValues' 65536 per call
  throwsSlug(() => p.randomBytes(-1), 'invalid_value');
});
