// The web client and the Python reference client (python -m client, the CLI) on one real
// server: texts both ways, delivered and read receipts both ways, the same safety number.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';

import { ROOT } from '../helpers.mjs';
import { PASSWORD, PYTHON, openClient, recorder, startServer } from './live.mjs';

const run = promisify(execFile);

describe('interop with the Python reference client', { timeout: 300_000 }, () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('../../../static/js/app/index.js').WebClient} */
  let dave;
  let home = '';
  /** @type {Record<string, ReturnType<typeof recorder>>} */
  const d = {};

  /**
   * Run the Python CLI as carol; resolves with its stdout.
   * @param {string[]} args
   */
  async function carol(...args) {
    const { stdout } = await run(PYTHON, ['-m', 'client', '--home', home, '--server', server.url, ...args], {
      cwd: ROOT,
      env: { ...process.env, SEALPOST_PASSWORD: PASSWORD },
      timeout: 60_000,
    });
    return stdout;
  }

  /** `receive --json`: the events carol's client reports. */
  async function carolReceives() {
    const out = await carol('receive', '--json', '--wait', '1');
    return out.split('\n').filter(Boolean).map((line) => JSON.parse(line));
  }

  before(async () => {
    server = await startServer();
    home = mkdtempSync(join(tmpdir(), 'sealpost-carol-'));
    await carol('register', 'carol');
    dave = await openClient(server.url);
    for (const type of ['message', 'status', 'undecryptable', 'error']) d[type] = recorder(dave, type);
    await dave.register('dave', PASSWORD);
    await dave.connect();
  });

  after(async () => {
    dave?.close();
    await server?.stop();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  test('web → Python: the text arrives, and the receipts move it to delivered, then read', async () => {
    const sent = await dave.sendText('carol', 'hello from the browser ✉');
    const events = await carolReceives();
    const got = events.find((e) => e.type === 'message');
    assert.ok(got, JSON.stringify(events));
    assert.deepEqual(
      { from: got.from, device: got.device, text: got.text, sent_at_ms: got.sent_at_ms },
      { from: 'dave', device: 1, text: 'hello from the browser ✉', sent_at_ms: sent.sentAt },
    );
    await d.status.wait((e) => e.id === sent.id && e.status === 'delivered');
    await carol('read', 'dave');
    await d.status.wait((e) => e.id === sent.id && e.status === 'read');
    assert.equal((await dave.messages('carol'))[0].status, 'read');
  });

  test('Python → web: the text arrives, and the web client\'s receipts reach Python', async () => {
    await carol('send', 'dave', 'hello', 'from', 'python');
    const { message } = await d.message.wait((e) => e.message.peer === 'carol' && e.message.direction === 'in');
    assert.equal(message.text, 'hello from python');
    assert.equal(message.direction, 'in');
    // Dave's DELIVERED receipt goes out on its own; the READ one when dave reads.
    let events = await carolReceives();
    assert.ok(events.some((e) => e.type === 'status' && e.peer === 'dave' && e.status === 'delivered'), JSON.stringify(events));
    await dave.markRead('carol');
    events = [];
    for (let i = 0; i < 5 && !events.some((e) => e.type === 'status' && e.status === 'read'); i++) {
      events = await carolReceives();
    }
    assert.ok(events.some((e) => e.type === 'status' && e.peer === 'dave' && e.status === 'read'), JSON.stringify(events));
    assert.deepEqual(d.undecryptable.seen, []);
    assert.deepEqual(d.error.seen, []);
  });

  test('both compute the same safety number', async () => {
    const [groups] = (await carol('safety-number', 'dave')).split('\n');
    const number = await dave.safetyNumber('carol');
    assert.equal(groups, number.groups.join(' '));
  });
});
