// The web client and the Python reference client (python -m client, the CLI) on one real
// server: texts both ways, delivered and read receipts both ways, the same safety number.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
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

  test('a Python home links as a second device of the web account: history, SENT both ways', async () => {
    const second = mkdtempSync(join(tmpdir(), 'sealpost-dave2-'));
    try {
      const link = spawn(PYTHON, ['-m', 'client', '--home', second, '--server', server.url, 'link', '--name', 'Python laptop', '--no-qr'], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      link.stderr.on('data', (chunk) => {
        stderr += chunk;
      });
      const lines = createInterface({ input: link.stdout });
      const output = [];
      const code = await new Promise((resolve, reject) => {
        link.once('exit', (status) => reject(new Error(`link exited (${status}): ${stderr}`)));
        lines.on('line', (line) => {
          output.push(line);
          if (line.startsWith('sealpost-link:')) resolve(line);
        });
      });
      const exited = new Promise((resolve) => link.once('exit', resolve));
      const preview = dave.previewLink(code);
      const approved = await dave.approveLink(code, { historyBytes: 100_000 });
      assert.equal(await exited, 0, stderr);
      assert.deepEqual(approved.deviceIds, [2]);
      assert.ok(output.some((line) => line === `Fingerprint: ${preview.fingerprint}`), output.join('\n'));
      assert.ok(output.some((line) => /linked as dave device 2/.test(line)), output.join('\n'));

      /** @param {string[]} args */
      const py = async (...args) =>
        (await run(PYTHON, ['-m', 'client', '--home', second, ...args], { cwd: ROOT, timeout: 60_000 })).stdout;
      const receive = async () => (await py('receive', '--json', '--wait', '2')).split('\n').filter(Boolean).map((l) => JSON.parse(l));
      let events = await receive();
      const history = events.find((e) => e.type === 'history');
      assert.ok(history, JSON.stringify(events));
      assert.equal(history.count, approved.historyMessages);
      assert.equal(approved.historyMessages, 2); // one text each way before

      const sent = await dave.sendText('carol', 'from the web, seen by my Python device');
      events = await receive();
      const transcript = events.find((e) => e.type === 'sent');
      assert.deepEqual([transcript?.to, transcript?.text, transcript?.device], ['carol', sent.text, 1], JSON.stringify(events));

      await py('send', 'carol', 'from my Python device');
      const { message } = await d.message.wait((e) => e.message.text === 'from my Python device');
      assert.deepEqual([message.direction, message.peer, message.senderDevice], ['out', 'carol', 2]);
      assert.ok((await carolReceives()).some((e) => e.type === 'message' && e.text === 'from my Python device'));
      assert.deepEqual(d.error.seen, []);
      assert.equal(await dave.revokeDevice(2), false);
    } finally {
      rmSync(second, { recursive: true, force: true });
    }
  });

  test('both compute the same safety number', async () => {
    const [groups] = (await carol('safety-number', 'dave')).split('\n');
    const number = await dave.safetyNumber('carol');
    assert.equal(groups, number.groups.join(' '));
  });
});
