// Reconnect without loss: the browser reaches the server through the weak-network proxy,
// which drops every connection every few seconds. Messages both ways keep arriving, each
// exactly once and in order, and the page shows the connection going and coming back.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import {
  PASSWORD,
  cli,
  cliReceive,
  cspViolations,
  liveSuite,
  newPerson,
  openChat,
  signUp,
  startProxy,
  transcript,
  uniqueName,
  waitForIncoming,
} from './helpers.mjs';

const COUNT = 6;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

describe('reconnect without loss', () => {
  const live = liveSuite({ homes: 'homes' });
  const { server } = live;
  /** @type {Awaited<ReturnType<typeof startProxy>>} */
  let proxy;
  const home = live.home('py');
  const webName = uniqueName('train');
  const pyName = uniqueName('desk');
  /** @type {Awaited<ReturnType<typeof newPerson>>} */
  let web;

  before(async () => {
    // Sign-up goes through the proxy's address unshaped (the account lives in that
    // origin's IndexedDB); the test proper then runs on the cutting proxy, same address.
    proxy = await startProxy(new URL(server.url).host, 'none');
    live.defer(() => proxy?.stop());
  });

  test('messages both ways survive repeated cuts', async () => {
    await cli(home, server.url, 'register', pyName, '--password', PASSWORD);
    web = await newPerson(live.browser, proxy.url);
    // The page records every connection state it shows.
    await web.context.addInitScript(() => {
      /** @type {any} */ (window).__states = [];
      new MutationObserver(() => {
        const state = document.getElementById('conn')?.dataset.state;
        const states = /** @type {any} */ (window).__states;
        if (state && states.at(-1) !== state) states.push(state);
      }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
    });
    await signUp(web.page, webName);
    await web.page.goto('/security');
    const port = Number(new URL(proxy.url).port);
    await proxy.stop();
    // 150 ms each way, and every connection dropped every 4 s (refused for 1 s after).
    proxy = await startProxy(new URL(server.url).host, 'intercontinental', {
      port,
      extra: ['--cut-interval', '4'],
    });
    await web.page.goto(`/chat#with=${pyName}`);
    await openChat(web.page, pyName);

    // Python sends at an even pace, straight to the server, across several cuts.
    for (let i = 0; i < COUNT; i++) {
      await cli(home, server.url, 'send', webName, `inbound ${i}`);
      await sleep(1_000);
    }
    for (let i = 0; i < COUNT; i++) await waitForIncoming(web.page, `inbound ${i}`, 90_000);

    // The browser sends across cuts too: what cannot go out at once waits and goes later.
    for (let i = 0; i < COUNT; i++) {
      await web.page.fill('#text', `outbound ${i}`);
      await web.page.click('#send');
      await sleep(1_000);
    }
    await web.page.waitForFunction(
      (count) =>
        [...document.querySelectorAll('#messages li.out')].filter((node) =>
          ['sent', 'delivered', 'read'].includes(node.getAttribute('data-status') ?? ''),
        ).length === count,
      COUNT,
      { timeout: 90_000 },
    );

    const events = await cliReceive(home, server.url, 3);
    const got = events.filter((e) => e.type === 'message').map((e) => e.text);
    assert.deepEqual(got, Array.from({ length: COUNT }, (_, i) => `outbound ${i}`));
    // Each inbound message once, in order, and nothing else on the page.
    assert.deepEqual(await transcript(web.page), [
      ...Array.from({ length: COUNT }, (_, i) => `in: inbound ${i}`),
      ...Array.from({ length: COUNT }, (_, i) => `out: outbound ${i}`),
    ]);
    const states = await web.page.evaluate(() => /** @type {any} */ (window).__states);
    assert.ok(states.filter((/** @type {string} */ s) => s === 'online').length >= 2, `states: ${states}`);
    assert.ok(states.some((/** @type {string} */ s) => s !== 'online'), `states: ${states}`);
    assert.deepEqual(await cspViolations(web.page), []);
  });

  test('a message written with no connection waits on screen and goes out when it is back', async () => {
    const port = Number(new URL(proxy.url).port);
    await proxy.stop(); // the link is gone: connections reset, new ones refused
    await web.page.waitForSelector('#conn:not([data-state="online"])', { timeout: 30_000 });
    await web.page.fill('#text', 'written in a tunnel');
    await web.page.click('#send');
    const last = web.page.locator('#messages li.out').last();
    // It is drawn once the client has given up reaching the server: wait for it, not for
    // the previous message (already the last one).
    await web.page.waitForFunction(
      () => [...document.querySelectorAll('#messages li.out .text')].at(-1)?.textContent === 'written in a tunnel',
    );
    // Waiting (not stored yet) or pending (stored, not yet accepted): never lost, never sent.
    assert.match((await last.getAttribute('data-status')) ?? '', /^(waiting|pending)$/);
    assert.equal(await web.page.inputValue('#text'), '');

    proxy = await startProxy(new URL(server.url).host, 'intercontinental', { port, extra: ['--no-cuts'] });
    await web.page.waitForFunction(
      () => {
        const nodes = [...document.querySelectorAll('#messages li.out')];
        const last = nodes.at(-1);
        return last?.querySelector('.text')?.textContent === 'written in a tunnel' &&
          ['sent', 'delivered', 'read'].includes(last.getAttribute('data-status') ?? '');
      },
      null,
      { timeout: 60_000 },
    );
    assert.equal(await web.page.locator('#messages li[data-status="waiting"]').count(), 0);
    const events = await cliReceive(home, server.url, 3);
    assert.deepEqual(
      events.filter((e) => e.type === 'message').map((e) => e.text),
      ['written in a tunnel'],
    );
  });
});
