// The web client on a 2G-like link: how much JavaScript it ships, how long the chat page
// takes to become usable with a cold HTTP cache, and how long the first message takes to
// be accepted by the server (SEND_OK, the tick turning to "sent").
//
//     make bench-web          (builds the bundle and collects static files first)
//     node bench/web_2g.mjs [--profile 2g|3g|intercontinental] [--json FILE]
//
// Set-up: a real Daphne server (harness/live_server.py) and, in front of it, the
// weak-network proxy (harness/netem.py) without cuts, so the figure is not luck of when a
// cut falls. The browser's account is made first through the same proxy address with no
// shaping (the "none" profile: same origin, so the same IndexedDB), then the proxy is
// restarted with the profile, the HTTP cache is cleared, and a new page loads
// /chat#with=<contact> - cold cache, keys already in the browser, as for a returning user
// on a new day. The contact is registered with the Python client straight at the server.
// A second run measures a first-ever visit: /signup in a fresh browser context until the
// form can be used.

import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  PASSWORD,
  ROOT,
  checkPrerequisites,
  cli,
  launchBrowser,
  startProxy,
  startServer,
  tempDir,
} from '../tests/browser/helpers.mjs';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
};
const PROFILE = option('--profile', '2g');
const JSON_OUT = option('--json', null);

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

/** Sizes of a collected static file as WhiteNoise serves it: raw, gzip and Brotli. */
function servedSizes(name) {
  const manifest = JSON.parse(readFileSync(path.join(ROOT, 'var/staticfiles/staticfiles.json'), 'utf8'));
  const file = path.join(ROOT, 'var/staticfiles', manifest.paths[name]);
  const size = (suffix) => {
    try {
      return statSync(file + suffix).size;
    } catch {
      return null;
    }
  };
  return { file: manifest.paths[name], raw: size(''), gzip: size('.gz'), brotli: size('.br') };
}

const seconds = (ms) => `${(ms / 1000).toFixed(2)} s`;
const kb = (bytes) => (bytes === null || Number.isNaN(bytes) ? 'n/a' : `${(bytes / 1024).toFixed(1)} KB`);

async function main() {
  checkPrerequisites();
  const js = servedSizes('dist/sealpost.js');
  const css = servedSizes('css/app.css');
  const server = await startServer();
  const homes = tempDir('bench-homes');
  const browser = await launchBrowser();
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const target = new URL(server.url).host;
  const results = { profile: PROFILE, js, css };
  try {
    const contact = 'contact';
    await cli(path.join(homes, 'contact'), server.url, 'register', contact, '--password', PASSWORD);

    // The account, made at full speed through the proxy's address.
    let proxy = await startProxy(target, 'none', { port });
    const context = await browser.newContext({ baseURL: origin, viewport: { width: 360, height: 640 } });
    const setup = await context.newPage();
    await setup.goto('/signup');
    await setup.fill('#username', 'phone');
    await setup.fill('#password', PASSWORD);
    await setup.check('#accept');
    await setup.click('#signup-submit');
    await setup.waitForURL('**/chat', { timeout: 120_000 });
    await setup.waitForSelector('#conn[data-state="online"]', { timeout: 60_000 });
    await setup.close();
    await proxy.stop();

    // Returning user, cold cache, on the shaped link.
    proxy = await startProxy(target, PROFILE, { port, extra: ['--no-cuts'] });
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.clearBrowserCache');
    const encodings = {};
    page.on('response', (response) => {
      const url = new URL(response.url());
      if (url.pathname.startsWith('/static/')) {
        encodings[url.pathname] = response.headers()['content-encoding'] ?? 'identity';
      }
    });
    const started = Date.now();
    await page.goto(`/chat#with=${contact}`, { waitUntil: 'commit', timeout: 120_000 });
    await page.waitForSelector('#app[data-ready="true"]', { timeout: 120_000 });
    const usable = Date.now() - started;
    await page.waitForSelector('#conn[data-state="online"]', { timeout: 120_000 });
    const online = Date.now() - started;
    await page.fill('#text', 'First message over 2G');
    const sendStarted = Date.now();
    await page.click('#send');
    await page.waitForSelector('#messages li.out:is([data-status="sent"], [data-status="delivered"], [data-status="read"])', {
      timeout: 120_000,
    });
    const sent = Date.now() - sendStarted;
    const navigation = await page.evaluate(() => {
      const nav = /** @type {PerformanceNavigationTiming} */ (performance.getEntriesByType('navigation')[0]);
      const resources = /** @type {PerformanceResourceTiming[]} */ (performance.getEntriesByType('resource'));
      const paint = performance.getEntriesByName('first-contentful-paint')[0];
      return {
        firstPaintMs: paint ? Math.round(paint.startTime) : null,
        htmlMs: Math.round(nav.responseEnd),
        domContentLoadedMs: Math.round(nav.domContentLoadedEventEnd),
        transferred: nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0),
      };
    });
    const returning = await proxy.stop();
    results.returning = {
      usableMs: usable,
      onlineMs: online,
      firstSendMs: sent,
      loadAndSendMs: Date.now() - started,
      ...navigation,
      proxyBytes: returning,
      encodings,
    };
    await context.close();

    // First visit: a fresh context (no cache, no account) opens the sign-up page.
    proxy = await startProxy(target, PROFILE, { port, extra: ['--no-cuts'] });
    const fresh = await browser.newContext({ baseURL: origin, viewport: { width: 360, height: 640 } });
    const visitor = await fresh.newPage();
    const visitStarted = Date.now();
    await visitor.goto('/signup', { waitUntil: 'commit', timeout: 120_000 });
    await visitor.waitForSelector('#app[data-ready="true"]', { timeout: 120_000 });
    const signupUsableMs = Date.now() - visitStarted;
    const firstPaintMs = await visitor.evaluate(() => {
      const paint = performance.getEntriesByName('first-contentful-paint')[0];
      return paint ? Math.round(paint.startTime) : null;
    });
    results.firstVisit = { signupUsableMs, firstPaintMs, proxyBytes: await proxy.stop() };
    await fresh.close();
  } finally {
    await browser.close();
    await server.stop();
    rmSync(homes, { recursive: true, force: true });
  }

  const r = results.returning;
  const rows = [
    ['JavaScript (all of it: app + crypto), gzip', kb(js.gzip)],
    ['JavaScript, Brotli', kb(js.brotli)],
    ['JavaScript, uncompressed', kb(js.raw)],
    ['CSS, gzip / Brotli', `${kb(css.gzip)} / ${kb(css.brotli)}`],
    [`bundle as served to Chromium over http`, Object.entries(r.encodings).map(([p, e]) => `${path.basename(p)}: ${e}`).join(', ')],
    [`${PROFILE}: /chat first paint (cold cache)`, r.firstPaintMs === null ? 'n/a' : seconds(r.firstPaintMs)],
    [`${PROFILE}: /chat usable (cold cache)`, seconds(r.usableMs)],
    [`${PROFILE}: relay connected`, seconds(r.onlineMs)],
    [`${PROFILE}: first message, click to SEND_OK`, seconds(r.firstSendMs)],
    [`${PROFILE}: load + first message sent`, seconds(r.loadAndSendMs)],
    [`${PROFILE}: bytes down / up (proxy)`, `${kb(r.proxyBytes.down)} / ${kb(r.proxyBytes.up)}`],
    [`${PROFILE}: first visit, /signup first paint`, results.firstVisit.firstPaintMs === null ? 'n/a' : seconds(results.firstVisit.firstPaintMs)],
    [`${PROFILE}: first visit, /signup script ready`, seconds(results.firstVisit.signupUsableMs)],
  ];
  const width = Math.max(...rows.map(([name]) => name.length));
  console.log(`web client over ${PROFILE} (harness/netem.py, no cuts)`);
  for (const [name, value] of rows) console.log(`  ${name.padEnd(width)}  ${value}`);
  if (JSON_OUT) writeFileSync(JSON_OUT, `${JSON.stringify(results, null, 2)}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
