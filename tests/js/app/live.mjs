// Shared by the tests that run the web client against a real server: the server process
// (harness/live_server.py's CLI), WebClients on their own fake IndexedDB, a WebSocket
// class for Node (the `ws` package) that records and can drop frames, and event helpers.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { IDBFactory } from 'fake-indexeddb';
import WS from 'ws';

import { WebClient } from '../../../static/js/app/index.js';
import { ROOT } from '../helpers.mjs';

export const PASSWORD = 'correct horse battery staple 42';
export const PYTHON = join(ROOT, '.venv', 'bin', 'python');

/**
 * Start `python -m harness.live_server` on a fresh work dir; resolves once it is READY.
 * @param {Record<string, string>} [env] settings overrides for this server (environment)
 */
export async function startServer(env = {}) {
  if (!existsSync(PYTHON)) {
    throw new Error(`${PYTHON} not found: these tests run the real server from the project's virtualenv; run 'make venv' first`);
  }
  const workdir = mkdtempSync(join(tmpdir(), 'sealpost-js-'));
  const child = spawn(PYTHON, ['-m', 'harness.live_server', '--workdir', workdir], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  process.once('exit', stop);
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the live server did not start in 90 s')), 90_000);
    child.once('exit', (code) => reject(new Error(`the live server exited (${code}); see ${workdir}`)));
    createInterface({ input: /** @type {any} */ (child.stdout) }).on('line', (line) => {
      const match = /^READY (\S+)$/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  return {
    url: /** @type {string} */ (url),
    workdir,
    async stop() {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      stop();
      await exited;
      rmSync(workdir, { recursive: true, force: true });
    },
  };
}

/**
 * A WebSocket constructor for relay.js in Node: `ws`, with the Origin the relay demands.
 * It records every frame it sends (`sent`), and on request drops outgoing SEND frames
 * (`dropSends`, a network that loses them) or incoming PONGs (`dropPongs`, a dead peer).
 * @param {string} baseUrl
 */
export function socketClass(baseUrl) {
  const origin = new URL(baseUrl).origin;
  return class TestSocket extends WS {
    /** @type {TestSocket[]} */
    static instances = [];
    /** @type {Uint8Array[]} */
    static sent = [];
    static dropSends = false;
    static dropPongs = false;

    /**
     * @param {string} url
     * @param {string[]} protocols
     */
    constructor(url, protocols) {
      super(url, protocols, { origin });
      TestSocket.instances.push(this);
    }

    /** @param {Uint8Array} data */
    send(data) {
      const bytes = Uint8Array.from(data);
      TestSocket.sent.push(bytes);
      if (TestSocket.dropSends && bytes[1] === 1) return; // FrameType.SEND
      super.send(data);
    }

    get onmessage() {
      return super.onmessage;
    }

    set onmessage(handler) {
      super.onmessage = !handler
        ? handler
        : (/** @type {any} */ event) => {
            const bytes = new Uint8Array(event.data);
            if (TestSocket.dropPongs && bytes[1] === 10) return; // FrameType.PONG
            handler(event);
          };
    }
  };
}

/**
 * A WebClient on its own in-memory IndexedDB (pass `indexedDB` to reopen the same one).
 * @param {string} url
 * @param {Record<string, any>} [options]
 */
export async function openClient(url, options = {}) {
  const indexedDB = options.indexedDB ?? new IDBFactory();
  const client = await WebClient.open({
    baseUrl: url,
    WebSocket: socketClass(url),
    receiptDelayMs: 10,
    ...options,
    indexedDB,
    relay: { baseMs: 20, capMs: 200, ...options.relay },
  });
  factories.set(client, indexedDB);
  return client;
}

/** The IndexedDB a client of openClient() keeps its state in (to reopen it). */
export const factories = new WeakMap();

/**
 * Collect `client`'s events of `type` (details), and wait for one that matches.
 * @param {EventTarget} client
 * @param {string} type
 */
export function recorder(client, type) {
  /** @type {any[]} */
  const seen = [];
  /** @type {{test: (d: any) => boolean, resolve: (d: any) => void}[]} */
  const waiting = [];
  client.addEventListener(type, (event) => {
    const detail = /** @type {CustomEvent} */ (event).detail;
    seen.push(detail);
    for (const w of [...waiting]) {
      if (w.test(detail)) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve(detail);
      }
    }
  });
  return {
    seen,
    /**
     * The first event (seen already, or to come) for which `test` holds.
     * @param {(d: any) => boolean} [test]
     * @param {number} [ms]
     */
    wait(test = () => true, ms = 15_000) {
      const found = seen.find(test);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching '${type}' event in ${ms} ms`)), ms);
        waiting.push({ test, resolve: (d) => (clearTimeout(timer), resolve(d)) });
      });
    },
  };
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Poll `check` until it returns something truthy.
 * @template T
 * @param {() => Promise<T> | T} check
 * @param {string} what
 * @param {number} [ms]
 * @returns {Promise<T>}
 */
export async function until(check, what, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}
