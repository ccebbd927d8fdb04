// Groups (static/js/protocol/groups.js, docs/protocol.md 17.1): the roster digest and group
// ids, against protocol/vectors/groups.json (its sender-key part: senderkeys.test.mjs) and
// against the Python package directly.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  GROUP_ID_BYTES,
  LABEL_ROSTER,
  ROSTER_DIGEST_BYTES,
  RosterEntry,
  Writer,
  checkGroupId,
  groupIdHex,
  newGroupId,
  parseGroupId,
  primitives as p,
  rosterDigest,
} from '../../static/js/protocol/index.js';
import { hex, loadVector, python, seededRandom, throwsSlug, unhex } from './helpers.mjs';

const DIGEST = `
import json, sys
from protocol.groups import RosterEntry, roster_digest
from protocol.errors import ProtocolError
out = []
for roster in json.load(sys.stdin):
    try:
        out.append(roster_digest(RosterEntry(u, d, r) for u, d, r in roster).hex())
    except ProtocolError as exc:
        out.append({"error": exc.code.slug})
print(json.dumps(out))
`;

/** @param {[string, number, number][]} roster */
const entries = (roster) => roster.map(([u, d, r]) => new RosterEntry(u, d, r));

test('the roster digest is the formula of 17.1, over the sorted entries', () => {
  const roster = entries([
    ['carol', 1, 7],
    ['alice', 2, 300],
    ['bob', 1, 2 ** 32 - 1],
    ['alice', 1, 1],
  ]);
  const w = new Writer().raw(LABEL_ROSTER).u8(0).varint(4);
  for (const [u, d, r] of [['alice', 1, 1], ['alice', 2, 300], ['bob', 1, 2 ** 32 - 1], ['carol', 1, 7]]) {
    w.str(/** @type {string} */ (u)).varint(d).varint(r);
  }
  const expected = p.sha256(w.getValue()).slice(0, ROSTER_DIGEST_BYTES);
  assert.equal(hex(rosterDigest(roster)), hex(expected));
  assert.equal(rosterDigest([]).length, 16);
  // any order gives the same digest; a changed registration id another
  assert.equal(hex(rosterDigest([...roster].reverse())), hex(expected));
  const reregistered = entries([['carol', 1, 8], ['alice', 2, 300], ['bob', 1, 2 ** 32 - 1], ['alice', 1, 1]]);
  assert.notEqual(hex(rosterDigest(reregistered)), hex(expected));
});

test('roster digests and refusals match Python', () => {
  const random = seededRandom(17);
  const names = ['alice', 'bob', 'carol', 'a_1', 'a10', 'a2b', 'aab', 'zed', 'bobby'];
  /** @type {[string, number, number][][]} */
  const rosters = [[], [['alice', 1, 1]]];
  for (let n = 0; n < 30; n++) {
    const seen = new Set();
    /** @type {[string, number, number][]} */
    const roster = [];
    for (let i = 0; i < 1 + random.int(12); i++) {
      const name = random.pick(names);
      const device = 1 + random.int(random.bool() ? 3 : 65535);
      if (seen.has(`${name}/${device}`)) continue;
      seen.add(`${name}/${device}`);
      roster.push([name, device, 1 + random.int(2 ** 32 - 1)]);
    }
    rosters.push(roster);
  }
  /** @type {[[string, number, number][], string][]} */
  const refused = [
    [[['Alice', 1, 1]], 'invalid_username'],
    [[['alice', 0, 1]], 'invalid_value'],
    [[['alice', 65536, 1]], 'invalid_value'],
    [[['alice', 1, 0]], 'invalid_value'],
    [[['alice', 1, 2 ** 32]], 'invalid_value'],
    [[['alice', 1, 5], ['bob', 2, 5], ['alice', 1, 6]], 'invalid_value'], // a device twice
  ];
  const answers = python(DIGEST, [...rosters, ...refused.map(([r]) => r)]);
  rosters.forEach((roster, i) => assert.equal(hex(rosterDigest(entries(roster))), answers[i], `roster ${i}`));
  refused.forEach(([roster, slug], i) => {
    assert.deepEqual(answers[rosters.length + i], { error: slug }, `Python on ${JSON.stringify(roster)}`);
    throwsSlug(() => rosterDigest(entries(roster)), slug);
  });
});

test('group ids: one spelling, 32 lower-case hex digits', () => {
  const id = unhex('000102030405060708090a0b0c0d0e0f');
  assert.equal(groupIdHex(id), '000102030405060708090a0b0c0d0e0f');
  assert.equal(hex(parseGroupId('000102030405060708090a0b0c0d0e0f')), hex(id));
  for (const bad of ['000102030405060708090A0B0C0D0E0F', '00', '', 'zz0102030405060708090a0b0c0d0e0f', ' 000102030405060708090a0b0c0d0e0f', '000102030405060708090a0b0c0d0e0f00']) {
    throwsSlug(() => parseGroupId(bad), 'invalid_value');
  }
  throwsSlug(() => groupIdHex(new Uint8Array(15)), 'invalid_value');
  throwsSlug(() => checkGroupId(new Uint8Array(17)), 'invalid_value');
  const fresh = newGroupId();
  assert.equal(fresh.length, GROUP_ID_BYTES);
  assert.equal(hex(parseGroupId(groupIdHex(fresh))), hex(fresh));
  const answers = python(
    `
import json, sys
from protocol.groups import parse_group_id, group_id_hex
from protocol.errors import ProtocolError
out = []
for text in json.load(sys.stdin):
    try:
        out.append(group_id_hex(parse_group_id(text)))
    except ProtocolError as exc:
        out.append({"error": exc.code.slug})
print(json.dumps(out))
`,
    ['000102030405060708090a0b0c0d0e0f', '000102030405060708090A0B0C0D0E0F', 'zz0102030405060708090a0b0c0d0e0f'],
  );
  assert.deepEqual(answers, ['000102030405060708090a0b0c0d0e0f', { error: 'invalid_value' }, { error: 'invalid_value' }]);
});

test('groups.json: roster digests, refused rosters, group ids', () => {
  const doc = loadVector('groups.json');
  /** @param {{username: string, device_id: number, registration_id: number}[]} list */
  const fromJson = (list) => list.map((e) => new RosterEntry(e.username, e.device_id, e.registration_id));
  assert.ok(doc.rosters.length >= 3);
  for (const c of doc.rosters) {
    assert.equal(hex(rosterDigest(fromJson(c.entries))), c.digest);
    assert.equal(hex(rosterDigest(fromJson(c.entries).reverse())), c.digest);
  }
  assert.ok(doc.invalid_rosters.length >= 5);
  for (const c of doc.invalid_rosters) throwsSlug(() => rosterDigest(fromJson(c.entries)), c.error);
  for (const c of doc.group_ids) {
    assert.equal(groupIdHex(unhex(c.bytes)), c.text);
    assert.equal(hex(parseGroupId(c.text)), c.bytes);
  }
  assert.ok(doc.invalid_group_ids.length >= 5);
  for (const text of doc.invalid_group_ids) throwsSlug(() => parseGroupId(text), 'invalid_value');
});
