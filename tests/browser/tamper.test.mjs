// A queued envelope changed at the server (one byte of its ciphertext flipped in the
// database) reaches the browser as "could not be decrypted", never as text; the messages
// around it are unharmed.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import {
  PASSWORD,
  PYTHON,
  assertTextOnly,
  cli,
  liveSuite,
  screenshot,
  signUp,
  uniqueName,
  waitForIncoming,
  waitReady,
} from './helpers.mjs';

const run = promisify(execFile);

// Flip the last byte of the newest envelope queued for `username`'s devices, straight in
// the server's SQLite file (the server itself never changes a payload).
const FLIP = `
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
row = db.execute(
    "SELECT e.id, e.payload FROM messaging_envelope e"
    " JOIN keys_device d ON d.id = e.device_id"
    " JOIN keys_account a ON a.id = d.account_id"
    " JOIN auth_user u ON u.id = a.user_id"
    " WHERE u.username = ? ORDER BY e.seq DESC LIMIT 1",
    (sys.argv[2],),
).fetchone()
payload = bytearray(row[1])
payload[-1] ^= 0x01
db.execute("UPDATE messaging_envelope SET payload = ? WHERE id = ?", (bytes(payload), row[0]))
db.commit()
print(row[0], len(payload))
`;

describe('tampered envelope', () => {
  const live = liveSuite({ homes: 'homes' });
  const { server } = live;
  const home = live.home('sender');
  const webName = uniqueName('erin');
  const pyName = uniqueName('mallory');

  test('is shown as undecryptable, not as text', async () => {
    const web = await live.newPerson();
    await signUp(web.page, webName);
    await cli(home, server.url, 'register', pyName, '--password', PASSWORD);
    // The page is closed (the context, and so the browser's store, stays): the messages
    // wait in the server's queue.
    await web.page.close();
    await cli(home, server.url, 'send', webName, 'an honest first message');
    await cli(home, server.url, 'send', webName, 'SECRET that the server altered');
    const { stdout } = await run(PYTHON, ['-c', FLIP, server.db, webName]);
    assert.match(stdout, /^\d+ \d+/);

    const page = await web.context.newPage();
    await page.goto(`/chat#with=${pyName}`);
    await waitReady(page);
    await waitForIncoming(page, 'an honest first message');
    const bad = page.locator('#messages li[data-kind="undecryptable"]');
    await bad.waitFor({ timeout: 60_000 });
    assert.equal(await bad.count(), 1);
    assert.match((await bad.locator('.text').textContent()) ?? '', /could not be decrypted/);
    // No trace of the plaintext, nor of the payload's bytes, anywhere on the page.
    assert.doesNotMatch((await page.textContent('body')) ?? '', /SECRET|server altered/);
    await assertTextOnly(page);
    await screenshot(page, 'undecryptable');

    // The conversation goes on: the next message decrypts.
    await cli(home, server.url, 'send', webName, 'and an honest one after it');
    await waitForIncoming(page, 'and an honest one after it');
    await web.context.close();
  });
});
