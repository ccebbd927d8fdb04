// The Content-Security-Policy on every page, pages that still work under it (the web
// client's, the Django admin, the API docs), and static files served small and cacheable.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, cspViolations, liveSuite } from './helpers.mjs';

const JS_BUDGET_GZ = 80 * 1024; // the limit for all the page's JavaScript, gzipped

describe('CSP and static files', () => {
  const live = liveSuite();
  const { server } = live;

  test('every page carries the strict policy', async () => {
    for (const page of ['/signup', '/login', '/chat', '/security', '/admin/login/', '/api/v1/docs/']) {
      const response = await fetch(server.url + page);
      assert.equal(response.status, 200, page);
      const policy = response.headers.get('content-security-policy') ?? '';
      const directives = Object.fromEntries(
        policy.split(';').map((part) => {
          const [name, ...values] = part.trim().split(/\s+/);
          return [name, values.join(' ')];
        }),
      );
      assert.equal(directives['default-src'], "'self'", page);
      assert.equal(directives['script-src'], "'self'", page);
      assert.equal(directives['style-src'], "'self'", page);
      assert.equal(directives['connect-src'], "'self'", page);
      // Decrypted photos and voice messages are shown from object URLs, and nothing else is.
      assert.equal(directives['img-src'], "'self' data: blob:", page);
      assert.equal(directives['media-src'], "'self' blob:", page);
      assert.equal(directives['frame-ancestors'], "'none'", page);
      assert.equal(directives['base-uri'], "'none'", page);
      assert.equal(directives['form-action'], "'self'", page);
      assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval/, page);
    }
  });

  test('the web pages have no inline script or style', async () => {
    for (const page of ['/signup', '/login', '/chat', '/security']) {
      const html = await (await fetch(server.url + page)).text();
      for (const tag of html.matchAll(/<script\b[^>]*>/g)) {
        assert.match(tag[0], /\bsrc="\/static\/dist\/sealpost\.[0-9a-f]{12}\.js"/, `${page}: ${tag[0]}`);
        assert.match(tag[0], /type="module"/, page);
      }
      assert.doesNotMatch(html, /<style\b|\sstyle="|\son[a-z]+=/i, page);
    }
    // The explanation page needs no script at all.
    assert.doesNotMatch(await (await fetch(`${server.url}/security`)).text(), /<script/);
  });

  test('the admin and the API docs work under the policy', async () => {
    const { context, page, problems } = await live.newPerson({ width: 1280, height: 900 });
    try {
      await page.goto('/admin/login/');
      await page.waitForSelector('#id_username');
      // The admin's stylesheet applied: its login box is styled (not the browser default).
      assert.notEqual(await page.$eval('#header', (node) => getComputedStyle(node).backgroundColor), 'rgba(0, 0, 0, 0)');
      assert.deepEqual(await cspViolations(page), []);

      await page.goto('/api/v1/docs/');
      // Swagger UI rendered the schema: the operations list appears.
      await page.waitForSelector('.opblock', { timeout: 30_000 });
      assert.deepEqual(await cspViolations(page), []);
      assert.deepEqual(
        problems.filter((text) => /Content Security Policy/i.test(text)),
        [],
      );
    } finally {
      await context.close();
    }
  });

  test('static files are compressed and cached for good', async () => {
    const html = await (await fetch(`${server.url}/chat`)).text();
    const script = /src="(\/static\/dist\/sealpost\.[0-9a-f]{12}\.js)"/.exec(html)?.[1];
    const style = /href="(\/static\/css\/app\.[0-9a-f]{12}\.css)"/.exec(html)?.[1];
    assert.ok(script && style, 'hashed bundle and stylesheet URLs');
    for (const [encoding, expected] of [
      ['br', 'br'],
      ['gzip', 'gzip'],
    ]) {
      const response = await fetch(server.url + script, { headers: { 'Accept-Encoding': encoding } });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('content-encoding'), expected, `${encoding} variant`);
      assert.match(response.headers.get('cache-control') ?? '', /max-age=31536000|max-age=315360000/);
      assert.match(response.headers.get('cache-control') ?? '', /immutable/);
    }
    const css = await fetch(server.url + style, { headers: { 'Accept-Encoding': 'br' } });
    assert.equal(css.headers.get('content-encoding'), 'br');
  });

  test('the JavaScript a page loads is at most 80 KB gzipped', () => {
    const bundle = readFileSync(path.join(ROOT, 'static/dist/sealpost.js'));
    const gz = gzipSync(bundle, { level: 9 }).length;
    console.log(`# static/dist/sealpost.js: ${bundle.length} bytes, ${gz} gzipped`);
    assert.ok(gz <= JS_BUDGET_GZ, `bundle is ${gz} bytes gzipped, over ${JS_BUDGET_GZ}`);
    // Loaded only when needed (a dynamic import): the photo, file and voice-message views
    // with the recorder, and the QR encoder. Reported, with the total if all are loaded.
    let total = gz;
    for (const name of readdirSync(path.join(ROOT, 'static/dist')).filter((n) => n.endsWith('.js') && n !== 'sealpost.js')) {
      const lazy = gzipSync(readFileSync(path.join(ROOT, 'static/dist', name)), { level: 9 }).length;
      total += lazy;
      console.log(`# static/dist/${name} (loaded on use): ${lazy} gzipped`);
    }
    console.log(`# all of it, every lazy part loaded: ${total} gzipped`);
  });
});
