// The officer's app's tests: a real gesync-server (the demo data, plain HTTP on loopback, which
// Chromium treats as a secure origin, so the service worker installs) and Debian's Chromium
// driven by Playwright. No browser is downloaded: playwright-core is pointed at /usr/bin/chromium.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { chromium } from 'playwright-core';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR || join(ROOT, 'target');
export const SERVER_BIN = join(TARGET, 'debug', 'gesync-server');
export const SEED_BIN = join(TARGET, 'debug', 'seed-phone');
export const OFFICER = { user: 'xa.damthuy', password: 'demo-xa-2025', commune: '04711' };
export const REVIEWER = { user: 'ransoat.caobang', password: 'demo-ransoat-2025' };
export const ADMIN = { user: 'admin', password: 'demo-admin-2025' };

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** `gesync-server demo --plain-http` on a fresh data directory. */
export async function startServer() {
  const dir = mkdtempSync(join(tmpdir(), 'gesync-app-'));
  const port = await freePort();
  const child = spawn(SERVER_BIN, ['demo', '--data-dir', join(dir, 'data'), '--listen', `127.0.0.1:${port}`, '--plain-http'], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, GESYNC_LOG: 'warn' } });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    try { if ((await fetch(url + '/healthz')).ok) break; } catch { /* starting */ }
    if (child.exitCode !== null) throw new Error('the server exited at start');
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    dir,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Records `count` cases from a phone of `user` (the SDK, not the app) and syncs them. */
export function seedRecords(url, user, password, commune, count) {
  const r = spawnSync(SEED_BIN, ['--server', url, '--username', user, '--commune', commune, '--count', String(count)], { input: password + '\n', encoding: 'utf8' });
  if (r.status !== 0) throw new Error('seed-phone failed: ' + r.stderr);
  return JSON.parse(r.stdout);
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A phone-sized browser context (a new profile: its own IndexedDB and service worker). */
export async function phone(browser) {
  const ctx = await browser.newContext({ viewport: { width: 360, height: 640 }, deviceScaleFactor: 1, locale: 'vi-VN' });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  return { ctx, page };
}

export async function openApp(page, url) {
  await page.goto(url + '/app/');
  await page.waitForFunction(() => window.gesyncReady === true, null, { timeout: 30000 });
}

/** Logs in through the app's form and waits for the list. */
export async function appLogin(page, user, password) {
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#syncbar', { timeout: 60000 });
}

/** Waits until no sync runs and returns the sync bar's text. */
export async function syncSettled(page, timeout = 120000) {
  await page.waitForFunction(() => {
    const b = document.querySelector('#sync');
    return b && !b.disabled;
  }, null, { timeout });
  return page.locator('#syncbar').innerText();
}

export async function api(url, path, { token, method = 'GET', json } = {}) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (json) headers['Content-Type'] = 'application/json';
  const r = await fetch(url + path, { method, headers, body: json ? JSON.stringify(json) : undefined });
  const text = await r.text();
  let body = null;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: r.status, body };
}

export async function token(url, who) {
  const r = await api(url, '/api/v1/auth/login', { method: 'POST', json: { username: who.user, password: who.password } });
  if (r.status !== 200) throw new Error(`login ${who.user}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.access_token;
}

/** The server's records of a commune, as the reviewer lists them. */
export async function serverRecords(url, commune) {
  const r = await api(url, `/api/v1/records?org_unit=${commune}`, { token: await token(url, REVIEWER) });
  return r.body;
}

export async function indicator(url, unit, period, id) {
  const r = await api(url, `/api/v1/indicators?org_unit=${unit}&period=${period}`, { token: await token(url, REVIEWER) });
  return r.body.indicators.find((i) => i.id === id);
}

/** Screenshots for docs/app/ (what an officer sees), when GESYNC_APP_SCREENSHOTS is set. */
export async function screenshot(page, name) {
  const dir = process.env.GESYNC_APP_SCREENSHOTS;
  if (!dir) return;
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(dir, name + '.png') });
}
