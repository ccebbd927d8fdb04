// Receipts and typing indicators between the web client and the Python reference client,
// both ways, and the settings that turn them off (kept in IndexedDB across a reload).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';
import {
  PYTHON,
  ROOT,
  cli,
  cliReceive,
  cspViolations,
  liveSuite,
  openChat,
  screenshot,
  sendText,
  waitForIncoming,
  waitReady,
} from './helpers.mjs';

/**
 * `receive --json --wait SECONDS` running in the background (typing indicators reach only
 * connected devices): `ready` once it has connected, `events` once it has exited.
 */
function receiveInBackground(home, server, seconds) {
  const child = spawn(PYTHON, ['-m', 'client', '--home', home, '--server', server, 'receive', '--json', '--wait', String(seconds)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const events = new Promise((resolve, reject) => {
    child.on('exit', (code) => {
      if (code) reject(new Error(`receive exited ${code}: ${stderr}`));
      else resolve(stdout.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line)));
    });
  });
  return { events, seen: () => stdout };
}

/** Wait until `check()` holds (polling). */
async function until(check, what, timeout = 20_000) {
  const end = Date.now() + timeout;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('receipts and typing, browser and Python client', () => {
  const live = liveSuite({ homes: 'typing', web: 'web', py: 'py' });
  const { server, web, webName, pyName, pyHome: home } = live;

  test('receipts both ways: ✓ sent, ✓✓ delivered, read', async () => {
    await openChat(web.page, pyName);
    const sent = await sendText(web.page, 'from the browser');
    assert.equal(await sent.getAttribute('data-status'), 'sent');
    await cliReceive(home, server.url, 2); // the Python client sends DELIVERED
    await web.page.waitForSelector('#messages li.out[data-status="delivered"]', { timeout: 30_000 });
    assert.equal(await sent.locator('.tick').textContent(), '✓✓');
    await cli(home, server.url, 'read', webName); // and READ
    await web.page.waitForSelector('#messages li.out[data-status="read"]', { timeout: 30_000 });
    assert.equal(await sent.locator('.tick').getAttribute('title'), 'Read');

    // Python to the browser: the open conversation shows it, so it is delivered and read.
    await cli(home, server.url, 'send', webName, 'from Python');
    await waitForIncoming(web.page, 'from Python');
    await until(async () => {
      const statuses = (await cliReceive(home, server.url, 2)).filter((e) => e.type === 'status').map((e) => e.status);
      return statuses.includes('read');
    }, 'the browser’s read receipt');
  });

  test('typing: the browser’s reaches the Python client, Python’s shows in the browser', async () => {
    await openChat(web.page, pyName);
    const receiver = receiveInBackground(home, server.url, 6);
    await new Promise((resolve) => setTimeout(resolve, 2500)); // connected by then
    await web.page.focus('#text');
    await web.page.keyboard.type('typing a reply');
    await web.page.click('#open-safety'); // leaving the box: "stopped"
    await web.page.click('#safety-back');
    const typing = (await receiver.events).filter((e) => e.type === 'typing');
    assert.deepEqual(
      typing.map((e) => [e.from, e.started]),
      [
        [webName, true],
        [webName, false],
      ],
    );
    await web.page.fill('#text', '');

    await cli(home, server.url, 'send-typing', webName);
    await web.page.waitForFunction((name) => document.getElementById('typing')?.textContent === `${name} is typing…`, pyName);
    await screenshot(web.page, 'typing-indicator');
    await cli(home, server.url, 'send-typing', webName, '--stop');
    await web.page.waitForFunction(() => document.getElementById('typing')?.textContent === '');
    // Without news, "typing…" goes by itself after a few seconds.
    await cli(home, server.url, 'send-typing', webName);
    await web.page.waitForFunction(() => document.getElementById('typing')?.textContent !== '');
    await web.page.waitForFunction(() => document.getElementById('typing')?.textContent === '', null, { timeout: 10_000 });
  });

  test('settings: receipts and typing off, kept across a reload', async () => {
    await web.page.evaluate(() => {
      location.hash = 'settings';
    });
    await web.page.waitForSelector('#main[data-view="settings"]');
    assert.equal(await web.page.isChecked('#set-receipts'), true);
    assert.equal(await web.page.isChecked('#set-typing'), true);
    await web.page.uncheck('#set-receipts');
    await web.page.uncheck('#set-typing');
    await screenshot(web.page, 'settings');
    await web.page.reload();
    await waitReady(web.page);
    assert.equal(await web.page.isChecked('#set-receipts'), false);
    assert.equal(await web.page.isChecked('#set-typing'), false);

    // Typing: none shown, none sent.
    await openChat(web.page, pyName);
    await cli(home, server.url, 'send-typing', webName);
    const receiver = receiveInBackground(home, server.url, 5);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    await web.page.focus('#text');
    await web.page.keyboard.type('quietly');
    assert.equal(await web.page.textContent('#typing'), '');
    assert.deepEqual((await receiver.events).filter((e) => e.type === 'typing'), []);
    await web.page.fill('#text', '');

    // Receipts: none for what arrives now.
    await cli(home, server.url, 'send', webName, 'no receipt for this one');
    await waitForIncoming(web.page, 'no receipt for this one');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.deepEqual((await cliReceive(home, server.url, 2)).filter((e) => e.type === 'status'), []);

    await web.page.evaluate(() => {
      location.hash = 'settings';
    });
    await web.page.check('#set-receipts');
    await web.page.check('#set-typing');
    assert.deepEqual(await cspViolations(web.page), []);
  });
});
