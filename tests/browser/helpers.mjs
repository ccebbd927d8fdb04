// Shared set-up for the browser tests: a real Daphne server (harness/live_server.py),
// Debian's Chromium driven by playwright-core, the Python reference client as a
// subprocess, and checks every page gets (no CSP violation, nothing rendered as HTML).

import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const PYTHON = path.join(ROOT, '.venv/bin/python');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const SCREENSHOTS = path.join(ROOT, 'artifacts/screenshots');
export const PASSWORD = 'correct horse battery staple 42';
export const PHONE = { width: 360, height: 640 };

const run = promisify(execFile);

/** Fail with a clear message rather than a Playwright stack when a prerequisite is missing. */
export function checkPrerequisites() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: run \`make browser\` (as root) first`);
  }
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: run \`make venv\` first`);
  if (!existsSync(path.join(ROOT, 'var/staticfiles/staticfiles.json'))) {
    throw new Error('no collected static files: run `make collectstatic` (make test-browser does)');
  }
}

/** A fresh temporary directory, removed by the returned cleanup. */
export function tempDir(prefix) {
  return mkdtempSync(path.join(tmpdir(), `sealpost-${prefix}-`));
}

/**
 * Start `python -m harness.live_server` in its own work directory; resolves once it has
 * printed READY. `stop()` sends SIGTERM and waits.
 */
export async function startServer() {
  const workdir = tempDir('server');
  const child = spawn(PYTHON, ['-m', 'harness.live_server', '--workdir', workdir], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const url = await new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s: ${stderr}`)), 60_000);
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const match = /READY (\S+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) at start: ${stderr}`));
    });
  });
  return {
    url,
    workdir,
    db: path.join(workdir, 'sealpost.sqlite3'),
    log: path.join(workdir, 'server.log'),
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(workdir, { recursive: true, force: true });
    },
  };
}

/**
 * The weak-network proxy (`python -m harness.netem`) on `port` (0: a free one) in front of
 * `target` (host:port). `extra` are more CLI options (`--no-cuts`, `--cut-interval 3`).
 * Resolves once it listens; `stop()` resolves to the bytes it carried each way.
 */
export async function startProxy(target, profile, { port = 0, extra = [] } = {}) {
  const child = spawn(
    PYTHON,
    ['-m', 'harness.netem', '--listen', String(port), '--target', target, '--profile', profile, ...extra],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const address = await new Promise((resolve, reject) => {
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const match = /READY (\S+)/.exec(stdout);
      if (match) resolve(match[1]);
    });
    child.once('exit', (code) => reject(new Error(`netem exited (${code}): ${stderr}`)));
  });
  return {
    url: `http://${address}`,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      const match = /(\d+) connections, (\d+) cuts, (\d+) bytes up, (\d+) bytes down/.exec(stderr);
      return match
        ? { connections: Number(match[1]), cuts: Number(match[2]), up: Number(match[3]), down: Number(match[4]) }
        : { connections: NaN, cuts: NaN, up: NaN, down: NaN };
    },
  };
}

/**
 * Debian's Chromium, headless, with no network of its own beyond what a test opens.
 * @param {string[]} [extraArgs] more command-line switches (a fake microphone, say)
 */
export function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extraArgs,
    ],
  });
}

/**
 * A browser context (its own IndexedDB: one person's browser) at phone size, whose pages
 * record every CSP violation and console error.
 * @param {import('playwright-core').Browser} browser
 * @param {string} baseURL
 */
export async function newPerson(browser, baseURL, viewport = PHONE) {
  const context = await browser.newContext({ baseURL, viewport, deviceScaleFactor: 1 });
  // Runs in every page before its own scripts; CSP does not apply to it (it is injected
  // by the DevTools protocol, not loaded by the page).
  await context.addInitScript(() => {
    /** @type {any} */ (window).__csp = [];
    document.addEventListener('securitypolicyviolation', (event) => {
      /** @type {any} */ (window).__csp.push(`${event.violatedDirective} ${event.blockedURI}`);
    });
  });
  const problems = [];
  context.on('console', (message) => {
    const text = message.text();
    if (message.type() === 'error' || /Content Security Policy/i.test(text)) problems.push(text);
  });
  context.on('weberror', (error) => problems.push(`uncaught: ${error.error().message}`));
  const page = await context.newPage();
  return { context, page, problems };
}

/** Violations recorded in the page so far (see newPerson). */
export async function cspViolations(page) {
  return page.evaluate(() => /** @type {any} */ (window).__csp ?? []);
}

/**
 * Sign up through the page and wait for the chat page.
 * @param {import('playwright-core').Page} page
 */
export async function signUp(page, username, password = PASSWORD, { watchProgress = false } = {}) {
  await page.goto('/signup');
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.check('#accept');
  await page.click('#signup-submit');
  if (watchProgress) {
    // The key-generation progress bar shows and moves while the keys are made.
    await page.waitForFunction(
      () => {
        const bar = /** @type {HTMLProgressElement | null} */ (document.getElementById('keygen-bar'));
        return bar && bar.offsetParent !== null && bar.value > 0 && bar.value < bar.max;
      },
      null,
      { polling: 'raf', timeout: 60_000 },
    );
  }
  await page.waitForURL('**/chat', { timeout: 120_000 });
  await waitReady(page);
}

/** The chat page has drawn and is connected to the relay. */
export async function waitReady(page) {
  await page.waitForSelector('#app[data-ready="true"]', { timeout: 60_000 });
  await page.waitForSelector('#conn[data-state="online"]', { timeout: 60_000 });
}

/** Open the conversation with `peer` (from the list, or by typing the name). */
export async function openChat(page, peer) {
  await page.evaluate((name) => {
    location.hash = `with=${encodeURIComponent(name)}`;
  }, peer);
  await page.waitForSelector('#main[data-view="chat"]');
  await page.waitForFunction((name) => document.getElementById('peer-name')?.textContent === name, peer);
}

/** Type and send; resolves once the message shows as at least sent. */
export async function sendText(page, text) {
  const before = await page.locator('#messages li.out').count();
  await page.fill('#text', text);
  await page.click('#send');
  const sent = page.locator('#messages li.out').nth(before);
  await sent.waitFor();
  await page.waitForFunction(
    (index) => {
      const node = document.querySelectorAll('#messages li.out')[index];
      return node && ['sent', 'delivered', 'read'].includes(/** @type {HTMLElement} */ (node).dataset.status ?? '');
    },
    before,
    { timeout: 60_000 },
  );
  return sent;
}

/** Wait until an incoming message with exactly `text` is on screen. */
export async function waitForIncoming(page, text, timeout = 60_000) {
  await waitForMessage(page, 'in', text, timeout);
}

/** Wait until an outgoing message with exactly `text` is on screen (sent from another device, say). */
export async function waitForOutgoing(page, text, timeout = 60_000) {
  await waitForMessage(page, 'out', text, timeout);
}

/** Wait until a message going `direction` ('in' or 'out') with exactly `text` is on screen. */
async function waitForMessage(page, direction, text, timeout) {
  await page.waitForFunction(
    ({ selector, wanted }) => [...document.querySelectorAll(selector)].some((node) => node.textContent === wanted),
    { selector: `#messages li.${direction} .text`, wanted: text },
    { timeout },
  );
}

/** Texts of the open conversation, in order, as `in: ...` / `out: ...`. */
export async function transcript(page) {
  return page.$$eval('#messages li', (items) =>
    items.map((item) => `${item.classList.contains('out') ? 'out' : 'in'}: ${item.querySelector('.text')?.textContent}`),
  );
}

/**
 * Checks that a message element holds text only: one <p class="text"> whose children are
 * text nodes, and no element the text might have injected.
 */
export async function assertTextOnly(page) {
  const bad = await page.$$eval('#messages li .text', (nodes) =>
    nodes.filter((node) => [...node.childNodes].some((child) => child.nodeType !== Node.TEXT_NODE)).length,
  );
  if (bad) throw new Error(`${bad} message element(s) hold markup, not text`);
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

/** The page fits a phone: nothing wider than the viewport. */
export async function assertFitsWidth(page) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
  }));
  if (scroll > width) throw new Error(`page is ${scroll}px wide in a ${width}px viewport`);
}

/**
 * The Python reference client: `python -m client --home HOME --server URL ARGS...`.
 * Resolves to stdout; rejects with stderr on a non-zero exit.
 */
export async function cli(home, server, ...args) {
  try {
    const { stdout } = await run(PYTHON, ['-m', 'client', '--home', home, '--server', server, ...args], {
      cwd: ROOT,
      timeout: 120_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout;
  } catch (error) {
    throw new Error(`sealpost ${args.join(' ')} failed: ${error.stderr || error.message}`);
  }
}

/** `receive --json --wait N`: the JSON events it printed. */
export async function cliReceive(home, server, wait = 3) {
  const out = await cli(home, server, 'receive', '--json', '--wait', String(wait));
  return out
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line));
}

/** Run Python code against a live server's database (Django set up, DATABASE_URL its DB). */
export async function djangoShell(server, code) {
  const { stdout } = await run(PYTHON, ['manage.py', 'shell', '-c', code], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: `sqlite:///${server.db}` },
    timeout: 60_000,
  });
  return stdout;
}

/** A username no other test run has used: lower-case letters and digits. */
export function uniqueName(prefix) {
  return `${prefix}${Math.random().toString(36).slice(2, 8)}`.replace(/[^a-z0-9_]/g, '').slice(0, 32);
}

/**
 * The set-up the suites share, as node:test hooks of the enclosing `describe` (call it
 * there, before the suite's own hooks, which then run after these `before`s):
 *
 * - `before` checks the prerequisites, starts a server and launches a browser (`launch`);
 * - with `py`, it registers a Python reference-client user named `pyName`, home `pyHome`
 *   (`<homes>/py`);
 * - with `web`, it signs a browser user named `webName` up in a context of its own (`web`,
 *   as newPerson makes);
 * - `after` undoes all of it, and whatever was handed to `defer`, in reverse order, then
 *   removes the `homes` directory.
 *
 * `server` and `web` are the same objects from the start, filled in by `before`: a suite may
 * take them apart at once (`const { server, web } = live`) and read their fields in its
 * hooks and tests. `homes` (a prefix) makes the temporary directory for Python homes at
 * once (`home(name)` is a path in it); `web` and `py` are name prefixes (see uniqueName).
 * @param {{ homes?: string, launch?: () => Promise<import('playwright-core').Browser>, py?: string, web?: string }} [options]
 */
export function liveSuite({ homes, launch = launchBrowser, py, web } = {}) {
  /** @type {(() => Promise<unknown>)[]} */
  const cleanups = [];
  const homesDir = homes ? tempDir(homes) : '';
  const live = {
    server: /** @type {Awaited<ReturnType<typeof startServer>>} */ ({}),
    /** @type {import('playwright-core').Browser} */
    browser: /** @type {any} */ (undefined),
    /** The browser user (with `web`). */
    web: /** @type {Awaited<ReturnType<typeof newPerson>>} */ ({}),
    webName: web ? uniqueName(web) : '',
    pyName: py ? uniqueName(py) : '',
    pyHome: homesDir && path.join(homesDir, 'py'),
    homes: homesDir,
    /** A path in the homes directory. @param {string} name */
    home: (name) => path.join(homesDir, name),
    /** One more person's browser on this suite's server, now (in a test or hook). @param {{ width: number, height: number }} [viewport] */
    newPerson: (viewport) => newPerson(live.browser, live.server.url, viewport),
    /**
     * One more person's browser for the whole suite: call it in the `describe`; the object
     * is filled in by a `before` hook registered now (so after the hooks registered earlier).
     */
    person: () => {
      const person = /** @type {Awaited<ReturnType<typeof newPerson>>} */ ({});
      before(async () => {
        Object.assign(person, await live.newPerson());
      });
      return person;
    },
    /** Run `cleanup` in `after`, before what was set up earlier. @param {() => Promise<unknown>} cleanup */
    defer: (cleanup) => {
      cleanups.push(cleanup);
    },
  };
  before(async () => {
    checkPrerequisites();
    Object.assign(live.server, await startServer());
    live.defer(() => live.server.stop());
    live.browser = await launch();
    live.defer(() => live.browser.close());
    if (web) Object.assign(live.web, await live.newPerson());
    if (py) await cli(live.pyHome, live.server.url, 'register', live.pyName, '--password', PASSWORD);
    if (web) await signUp(live.web.page, live.webName);
  });
  after(async () => {
    while (cleanups.length) await /** @type {() => Promise<unknown>} */ (cleanups.pop())();
    if (homesDir) rmSync(homesDir, { recursive: true, force: true });
  });
  return live;
}

/** The newest outgoing attachment (photo, file, voice message) shows as at least sent. */
export async function waitAttachmentSent(page) {
  await page.waitForFunction(
    () => {
      const node = [...document.querySelectorAll('#messages li.out[data-kind="attachment"]')].pop();
      return ['sent', 'delivered', 'read'].includes(/** @type {HTMLElement} */ (node)?.dataset.status ?? '');
    },
    null,
    { timeout: 60_000 },
  );
}

/**
 * Read the QR code drawn on the canvas at `selector` (once its `data-modules` is set),
 * module by module: `{ payload_hex, quiet_zone, modules }`, what qr_matches.py reads.
 * @param {import('playwright-core').Page} page
 * @param {string} selector
 */
export async function readQr(page, selector) {
  return page.$eval(selector, (node) => {
    const canvas = /** @type {HTMLCanvasElement} */ (node);
    const count = Number(canvas.dataset.modules);
    const scale = canvas.width / count;
    const pixels = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d')).getImageData(0, 0, canvas.width, canvas.height).data;
    const modules = [];
    for (let y = 0; y < count; y++) {
      const row = [];
      for (let x = 0; x < count; x++) {
        const half = Math.floor(scale / 2);
        row.push(pixels[((y * scale + half) * canvas.width + (x * scale + half)) * 4] < 128 ? 1 : 0);
      }
      modules.push(row);
    }
    return { payload_hex: canvas.dataset.payload, quiet_zone: 4, modules };
  });
}

/**
 * Check (with segno, the Python client's QR library) that a code read by readQr is the one
 * the Python side draws for its payload; rejects otherwise.
 * @param {Awaited<ReturnType<typeof readQr>>} qr
 */
export async function assertQrMatchesPython(qr) {
  const check = run(PYTHON, ['tests/browser/qr_matches.py'], { cwd: ROOT });
  check.child.stdin?.end(JSON.stringify(qr));
  await check; // rejects on a non-zero exit
}
