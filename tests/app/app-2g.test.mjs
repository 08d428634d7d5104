// The app's first sync over the field's 2G link (field-link.md: about 250 kbit/s down, 50 up,
// 800 ms of latency), throttled by Chromium itself, with a cut in the middle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, phone, openApp, appLogin, syncSettled, serverRecords, screenshot, OFFICER, seedRecords } from './harness.mjs';

const G2 = { offline: false, latency: 800, downloadThroughput: 250000 / 8, uploadThroughput: 50000 / 8 };
const count = (text) => Number(text.replace(/[^\d]/g, ''));

test('2G: a first sync of 1,200 records completes with progress shown, a cut in the middle resumes, nothing doubled', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    seedRecords(server.url, OFFICER.user, OFFICER.password, OFFICER.commune, 1200);
    const expected = await serverRecords(server.url, OFFICER.commune);
    const { ctx, page } = await phone(browser);
    const cdp = await ctx.newCDPSession(page);
    await cdp.send('Network.enable');
    // The first visit's download: every file of /app/ as it crossed the wire (gzip).
    const appFiles = new Map();
    cdp.on('Network.responseReceived', (e) => { if (new URL(e.response.url).pathname.startsWith('/app/')) appFiles.set(e.requestId, e.response.url); });
    let appBytes = 0;
    cdp.on('Network.loadingFinished', (e) => { if (appFiles.has(e.requestId)) appBytes += e.encodedDataLength; });
    await openApp(page, server.url);
    await page.evaluate(async () => { await navigator.serviceWorker.ready; });
    await cdp.send('Network.emulateNetworkConditions', G2);
    const sync = new Set();
    let bytes = 0;
    let requests = 0;
    cdp.on('Network.requestWillBeSent', (e) => { if (e.request.url.endsWith('/api/v1/sync')) { sync.add(e.requestId); requests += 1; } });
    cdp.on('Network.loadingFinished', (e) => { if (sync.has(e.requestId)) bytes += e.encodedDataLength; });
    const started = Date.now();
    await appLogin(page, OFFICER.user, OFFICER.password);
    // Progress in the officer's words: "n / total hồ sơ".
    const progress = (min) => page.waitForFunction((min) => {
      const m = /([\d.]+) \/ ([\d.]+) hồ sơ/.exec(document.querySelector('#progress')?.textContent || '');
      return m && Number(m[1].replaceAll('.', '')) >= min ? m[0] : null;
    }, min, { timeout: 180000 });
    const shown = await (await progress(300)).jsonValue();
    assert.match(shown, /\/ 1\.\d{3} hồ sơ/);
    // The list fills while the sync goes on, not only at its end.
    await page.waitForFunction(() => {
      const n = Number((document.querySelector('#record-count')?.textContent || '').replace(/[^\d]/g, ''));
      return n > 0 && document.querySelector('#progress') !== null;
    }, null, { timeout: 30000 });
    await screenshot(page, '06-dong-bo-2g');
    // The link drops for three seconds in the middle.
    await cdp.send('Network.emulateNetworkConditions', { ...G2, offline: true });
    await new Promise((r) => setTimeout(r, 3000));
    await cdp.send('Network.emulateNetworkConditions', G2);
    await page.waitForFunction((n) => Number((document.querySelector('#record-count')?.textContent || '').replace(/[^\d]/g, '')) === n, expected.length, { timeout: 240000 });
    await syncSettled(page, 240000);
    const seconds = (Date.now() - started) / 1000;
    assert.equal(count(await page.locator('#record-count').innerText()), expected.length, 'every record, once');
    assert.match(await page.locator('#pending-count').innerText(), /^0 /);
    const after = await serverRecords(server.url, OFFICER.commune);
    assert.equal(after.length, expected.length, 'nothing doubled on the server');
    const linkSeconds = bytes / G2.downloadThroughput;
    // After the first visit, on a CPU four times slower: opening to the login form, then an
    // offline unlock of the 1,300 sealed records to the list.
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await cdp.send('Emulation.setCPUThrottlingRate', { rate: 4 });
    await ctx.setOffline(true);
    let t = Date.now();
    await page.reload();
    await page.waitForFunction(() => window.gesyncReady === true, null, { timeout: 60000 });
    const openMs = Date.now() - t;
    t = Date.now();
    await appLogin(page, OFFICER.user, OFFICER.password);
    await page.waitForSelector('#records');
    const unlockMs = Date.now() - t;
    assert.equal(count(await page.locator('#record-count').innerText()), expected.length);
    console.log(JSON.stringify({
      first_visit_app_bytes: appBytes,
      records: expected.length, seconds: Number(seconds.toFixed(1)), sync_requests: requests, sync_bytes_down: bytes,
      link_seconds_for_bytes: Number(linkSeconds.toFixed(1)), ratio: Number((seconds / linkSeconds).toFixed(2)),
      cpu4x_open_ms: openMs, cpu4x_unlock_to_list_ms: unlockMs,
    }));
  } finally {
    await browser.close();
    await server.stop();
  }
});
