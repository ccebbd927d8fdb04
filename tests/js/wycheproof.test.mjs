// Every Wycheproof vector for our primitives, run against static/js/protocol/primitives.js
// with the expectations of tests/protocol/test_wycheproof.py, so that the browser's
// wrappers accept and reject exactly what the Python ones (libsodium, OpenSSL) do.
//
// Origin: Project Wycheproof (https://github.com/C2SP/wycheproof, maintained by C2SP,
// started at Google), Apache License 2.0 (the LICENSE file beside the vectors). They are
// not vendored: they live in ../shared/vectors/wycheproof/ beside the repository. A missing
// file FAILS these tests; they never skip. Every vector of each file runs, whatever its
// result; a result or kind of vector not known here fails, so a new one forces a decision.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ed25519 } from '@noble/curves/ed25519.js';

import { primitives as p } from '../../static/js/protocol/index.js';
import { errorOf, hex, loadWycheproof, unhex } from './helpers.mjs';

const FILES = {
  x25519: 'XDH',
  ed25519: 'EDDSA',
  xchacha20_poly1305: 'XCHACHA20-POLY1305',
  hkdf_sha256: 'HKDF-SHA-256',
  hmac_sha256: 'HMACSHA256',
  mlkem_768: 'ML-KEM',
};

/**
 * @typedef {{tcId: number, result: string, flags?: string[], [field: string]: unknown}} Case
 * @typedef {{tests: Case[], [field: string]: unknown}} Group
 */

/**
 * Run `check` on every vector of a file; collect failures so that one report names every
 * failing tcId. Returns the number of vectors run.
 * @param {string} stem
 * @param {(group: Group, test: Case, v: (field: string) => Uint8Array) => void} check
 */
function runAll(stem, check) {
  const data = loadWycheproof(stem);
  /** @type {string[]} */
  const failures = [];
  let count = 0;
  for (const group of data.testGroups) {
    for (const t of group.tests) {
      count += 1;
      try {
        check(group, t, (field) => unhex(/** @type {string} */ (t[field])));
      } catch (error) {
        failures.push(`${stem}-tc${t.tcId} (${t.result}, ${(t.flags ?? []).join(',')}): ${/** @type {Error} */ (error).message}`);
      }
    }
  }
  assert.deepEqual(failures, [], `${failures.length} of ${count} vectors failed`);
  assert.equal(count, data.numberOfTests);
  return count;
}

/**
 * @param {() => unknown} call
 * @param {string} slug
 */
function expectError(call, slug) {
  const error = errorOf(call);
  if (error === null) throw new Error(`expected ${slug}, got no error`);
  if (error.slug !== slug) throw new Error(`expected ${slug}, got ${error.slug}`);
}

/** @param {Case} t */
function unknown(t) {
  throw new Error(`result ${t.result} with flags ${(t.flags ?? []).join(',')} is not a kind of vector these tests know; decide its semantics`);
}

describe('the vector files', () => {
  for (const [stem, algorithm] of Object.entries(FILES)) {
    test(`${stem}: present and complete`, () => {
      const data = loadWycheproof(stem);
      assert.equal(data.algorithm, algorithm);
      const ids = data.testGroups.flatMap((/** @type {Group} */ g) => g.tests.map((t) => t.tcId));
      assert.equal(ids.length, data.numberOfTests, 'numberOfTests disagrees with the tests present');
      assert.equal(new Set(ids).size, ids.length, 'duplicate tcId');
    });
  }
});

test('x25519: every vector', () => {
  const count = runAll('x25519', (_group, t, v) => {
    const [priv, pub, shared] = [v('private'), v('public'), v('shared')];
    const flags = t.flags ?? [];
    if (t.result === 'invalid') {
      expectError(() => p.x25519(priv, pub), 'bad_key');
    } else if (flags.includes('ZeroSharedSecret')) {
      assert.ok(['valid', 'acceptable'].includes(t.result));
      assert.ok(shared.every((b) => b === 0), 'ZeroSharedSecret vector with a nonzero secret');
      expectError(() => p.x25519(priv, pub), 'bad_key');
    } else if (t.result === 'valid' || t.result === 'acceptable') {
      assert.equal(hex(p.x25519(priv, pub)), hex(shared));
    } else {
      unknown(t);
    }
  });
  assert.ok(count > 500);
});

test('ed25519: every vector (libsodium-strict verification)', () => {
  runAll('ed25519', (group, t, v) => {
    const publicKey = unhex(/** @type {{pk: string}} */ (group.publicKey).pk);
    const [message, signature] = [v('msg'), v('sig')];
    if (t.result === 'valid') {
      p.ed25519Verify(publicKey, message, signature); // throws if rejected
    } else if (t.result === 'invalid') {
      expectError(() => p.ed25519Verify(publicKey, message, signature), publicKey.length !== 32 ? 'bad_key' : 'bad_signature');
    } else {
      unknown(t);
    }
  });
});

test("ed25519: noble's default (ZIP-215) verify accepts Wycheproof-invalid signatures that ours rejects", () => {
  // Documents why primitives.js passes { zip215: false } and adds libsodium's checks.
  const data = loadWycheproof('ed25519');
  let permissive = 0;
  for (const group of data.testGroups) {
    const publicKey = unhex(group.publicKey.pk);
    if (publicKey.length !== 32) continue;
    for (const t of group.tests) {
      if (t.result !== 'invalid' || unhex(t.sig).length !== 64) continue;
      let accepted = false;
      try {
        accepted = ed25519.verify(unhex(t.sig), unhex(t.msg), publicKey);
      } catch {
        accepted = false;
      }
      if (accepted) {
        permissive += 1;
        assert.notEqual(errorOf(() => p.ed25519Verify(publicKey, unhex(t.msg), unhex(t.sig))), null);
      }
    }
  }
  assert.ok(permissive > 0, 'expected at least one vector that ZIP-215 accepts and RFC 8032 rejects');
});

test('xchacha20_poly1305: every vector', () => {
  runAll('xchacha20_poly1305', (_group, t, v) => {
    const [key, nonce, aad, message] = [v('key'), v('iv'), v('aad'), v('msg')];
    const sealed = new Uint8Array([...v('ct'), ...v('tag')]);
    const badLengths = key.length !== 32 || nonce.length !== 24;
    if (t.result === 'valid') {
      assert.equal(hex(p.aeadEncrypt(key, nonce, message, aad)), hex(sealed));
      assert.equal(hex(p.aeadDecrypt(key, nonce, sealed, aad)), hex(message));
    } else if (t.result === 'invalid' && badLengths) {
      expectError(() => p.aeadDecrypt(key, nonce, sealed, aad), 'bad_key');
      expectError(() => p.aeadEncrypt(key, nonce, message, aad), 'bad_key');
    } else if (t.result === 'invalid') {
      expectError(() => p.aeadDecrypt(key, nonce, sealed, aad), 'decrypt_failed');
      assert.notEqual(hex(p.aeadEncrypt(key, nonce, message, aad)), hex(sealed));
    } else {
      unknown(t);
    }
  });
});

test('hkdf_sha256: every vector', () => {
  runAll('hkdf_sha256', (_group, t, v) => {
    const [ikm, salt, info] = [v('ikm'), v('salt'), v('info')];
    const size = Number(t.size);
    if (t.result === 'valid') {
      const okm = v('okm');
      assert.equal(okm.length, size);
      assert.equal(hex(p.hkdfSha256(ikm, salt, info, size)), hex(okm));
    } else if (t.result === 'invalid') {
      expectError(() => p.hkdfSha256(ikm, salt, info, size), 'invalid_value');
    } else {
      unknown(t);
    }
  });
});

test('hmac_sha256: every vector', () => {
  runAll('hmac_sha256', (group, t, v) => {
    const tagBytes = Number(group.tagSize) / 8;
    const [key, message, tag] = [v('key'), v('msg'), v('tag')];
    const full = p.hmacSha256(key, message);
    assert.equal(full.length, 32);
    const matches = tag.length === tagBytes && p.constantTimeEqual(full.subarray(0, tagBytes), tag);
    if (t.result === 'valid') assert.ok(matches);
    else if (t.result === 'invalid') assert.ok(!matches);
    else unknown(t);
  });
});

test('mlkem_768: every vector', () => {
  runAll('mlkem_768', (group, t, v) => {
    assert.equal(group.parameterSet, 'ML-KEM-768');
    const [seedBytes, ciphertext] = [v('seed'), v('c')];
    const ek = t.ek ? v('ek') : null;
    if (seedBytes.length === 64 && ek !== null) {
      assert.equal(hex(p.mlkem768PublicKey(seedBytes)), hex(ek));
    }
    if (t.result === 'valid') {
      assert.ok(ek !== null);
      assert.equal(hex(p.mlkem768Decapsulate(seedBytes, ciphertext)), hex(v('K')));
      const [fresh, shared] = p.mlkem768Encapsulate(ek);
      assert.equal(hex(p.mlkem768Decapsulate(seedBytes, fresh)), hex(shared));
    } else if (t.result === 'invalid' && seedBytes.length !== 64) {
      expectError(() => p.mlkem768PublicKey(seedBytes), 'bad_key');
      expectError(() => p.mlkem768Decapsulate(seedBytes, ciphertext), 'bad_key');
    } else if (t.result === 'invalid' && ciphertext.length !== 1088) {
      expectError(() => p.mlkem768Decapsulate(seedBytes, ciphertext), 'decrypt_failed');
    } else {
      unknown(t);
    }
  });
});
