// The officer's app in a real browser against a real server: offline use, sync by itself,
// sealed per-officer stores, revoke, conflicts. (2G: app-2g.test.mjs.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, phone, openApp, appLogin, syncSettled, api, token, serverRecords, indicator, screenshot, OFFICER, ADMIN, seedRecords } from './harness.mjs';

const ids = (page) => page.$$eval('#records [data-id]', (els) => els.map((e) => e.dataset.id));
const state = (page) => page.locator('#record-state').innerText();
const count = (text) => Number(text.replace(/[^\d]/g, ''));

test('first visit online, then offline: the app opens, unlocks, records a case, and syncs by itself when the connection returns', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const { ctx, page } = await phone(browser);
    await openApp(page, server.url);
    await screenshot(page, '01-dang-nhap');
    await appLogin(page, OFFICER.user, OFFICER.password);
    const bar = await syncSettled(page);
    assert.match(bar, /0 hồ sơ chờ gửi/);
    const held = (await ids(page)).length;
    assert.equal(held, (await serverRecords(server.url, OFFICER.commune)).length, 'the commune\'s records are on the phone');
    await screenshot(page, '02-danh-sach');
    // The shell and the module are cached by the service worker.
    await page.waitForFunction(async () => {
      await navigator.serviceWorker.ready;
      return (await (await caches.open('gesync-app-v1')).keys()).length >= 10;
    }, null, { timeout: 30000 });
    const before = await indicator(server.url, OFFICER.commune, '2026Q4', 'gbv_victims_supported');

    await ctx.setOffline(true);
    await page.reload();
    await page.waitForFunction(() => window.gesyncReady === true, null, { timeout: 30000 });
    assert.equal(await page.locator('#net').innerText(), 'Mất mạng');
    // A wrong password does not unlock the store offline.
    await page.fill('#username', OFFICER.user);
    await page.fill('#password', 'not-the-password');
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#login-error')?.textContent.length > 0);
    assert.match(await page.locator('#login-error').innerText(), /Sai tên đăng nhập hoặc mật khẩu/);
    await appLogin(page, OFFICER.user, OFFICER.password);
    assert.equal((await ids(page)).length, held, 'the records are there offline');

    // A case, offline; the schema's check speaks Vietnamese.
    await page.click('[data-kind=gbv_case]');
    await screenshot(page, '03-them-ho-so');
    await page.click('#save');
    assert.match(await page.locator('#form-error').innerText(), /Trường «Ngày phát hiện»: cần nhập/);
    await page.fill('#f-detected_on', '2026-11-20');
    await page.selectOption('#f-setting', 'domestic');
    await page.selectOption('#f-victim-sex', 'female');
    await page.fill('#f-notes', 'Ghi nhận khi không có mạng');
    await page.click('#save');
    await page.waitForSelector('#record-state');
    assert.equal(await state(page), 'chờ gửi');
    // A service, appended offline too.
    await page.selectOption('#services-f-kind', 'health');
    await page.fill('#services-f-provided_on', '2026-11-21');
    await page.click('form[data-list=services] button[type=submit]');
    await page.waitForSelector('#record-state');
    await screenshot(page, '04-ho-so-cho-gui');

    // Online again: it syncs by itself.
    await ctx.setOffline(false);
    await page.waitForFunction(() => document.querySelector('#record-state')?.textContent === 'đã gửi', null, { timeout: 60000 });
    const onServer = await serverRecords(server.url, OFFICER.commune);
    const mine = onServer.filter((r) => r.notes === 'Ghi nhận khi không có mạng');
    assert.equal(mine.length, 1, 'the case is on the server once');
    assert.equal(mine[0].services.length, 1);
    const after = await indicator(server.url, OFFICER.commune, '2026Q4', 'gbv_victims_supported');
    assert.equal(after.denominator, before.denominator + 1, 'the case is in the commune\'s figures');
    assert.equal(after.numerator, before.numerator + 1, 'reached by a service');
  } finally {
    await browser.close();
    await server.stop();
  }
});

test('behind replicas of two builds, a request the older one cannot read goes again without the records dictionary', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    seedRecords(server.url, OFFICER.user, OFFICER.password, OFFICER.commune, 300);
    const expected = await serverRecords(server.url, OFFICER.commune);
    const { page } = await phone(browser);
    await openApp(page, server.url);
    // A replica of a build before the records dictionary answers the first request made with
    // it, as such a build does: 400 bad_sync_message (the frame's flags byte says 2).
    const framed = [];
    let refused = 0;
    await page.route('**/api/v1/sync', (route) => {
      const dict = (route.request().postDataBuffer()[5] & 2) !== 0;
      framed.push(dict);
      if (dict && refused === 0) {
        refused += 1;
        return route.fulfill({ status: 400, contentType: 'application/json', body: JSON.stringify({ error: { code: 'bad_sync_message', message: 'malformed sync message: unknown flags 0x03' } }) });
      }
      return route.continue();
    });
    await appLogin(page, OFFICER.user, OFFICER.password);
    await syncSettled(page);
    assert.equal(refused, 1, `requests with the dictionary: ${framed}`);
    assert.equal(framed[0], false, 'the first request of a sync goes without it');
    assert.ok(framed.indexOf(true) > 0 && framed.slice(framed.indexOf(true) + 1).every((d) => !d), `again at once without it, to the end of the sync: ${framed}`);
    assert.equal(await page.locator('#sync-error').count(), 0, 'no error shown');
    assert.equal(count(await page.locator('#record-count').innerText()), expected.length, 'every record');
  } finally {
    await browser.close();
    await server.stop();
  }
});

test('a device revoked on the admin side is wiped, and the app says why', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const { page } = await phone(browser);
    await openApp(page, server.url);
    await appLogin(page, OFFICER.user, OFFICER.password);
    await syncSettled(page);
    const admin = await token(server.url, ADMIN);
    const devices = (await api(server.url, `/api/v1/users/${OFFICER.user}/devices`, { token: admin })).body;
    const app = devices.filter((d) => d.device_id.startsWith('app-'));
    assert.equal(app.length, 1, JSON.stringify(devices));
    const r = await api(server.url, `/api/v1/users/${OFFICER.user}/devices/${app[0].device_id}/revoke`, { method: 'POST', token: admin });
    assert.equal(r.status, 204);
    await page.click('#sync');
    await page.waitForSelector('#login-error');
    await page.waitForFunction(() => /thu hồi/.test(document.querySelector('#login-error').textContent));
    await screenshot(page, '07-thiet-bi-bi-thu-hoi');
    const dbs = await page.evaluate(async () => (await indexedDB.databases()).map((d) => d.name));
    assert.ok(!dbs.includes('gesync-officer-' + OFFICER.user), `the store is gone: ${dbs}`);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test('two officers on one browser: neither sees the other\'s records, even with the first session ended but not wiped', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const other = { user: 'xa.trungkhanh', password: 'mat-khau-can-bo-xa-2025', commune: '04712' };
    const admin = await token(server.url, ADMIN);
    const created = await api(server.url, '/api/v1/users', { method: 'POST', token: admin, json: { username: other.user, password: other.password, role: 'commune_officer', org_unit: other.commune } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    seedRecords(server.url, other.user, other.password, other.commune, 5);
    const theirs = new Set((await serverRecords(server.url, other.commune)).map((r) => r.id));
    const mine = await serverRecords(server.url, OFFICER.commune);
    const secret = mine.find((r) => r.title)?.title;
    assert.ok(secret, 'a record with a title to look for');

    const { page } = await phone(browser);
    await openApp(page, server.url);
    await appLogin(page, OFFICER.user, OFFICER.password);
    await syncSettled(page);
    assert.equal((await ids(page)).length, mine.length);
    await page.click('#logout');
    await screenshot(page, '08-dang-xuat');
    await page.click('#logout-keep');
    await page.waitForSelector('#login');

    // The first officer's store is there, sealed: nothing of it reads as text.
    const leaked = await page.evaluate(async ({ user, secret }) => {
      const db = await new Promise((res, rej) => { const r = indexedDB.open('gesync-officer-' + user); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
      const all = await new Promise((res) => { const r = db.transaction('records').objectStore('records').getAll(); r.onsuccess = () => res(r.result); });
      db.close();
      const text = all.map((v) => new TextDecoder('latin1').decode(v.ct)).join('');
      return { n: all.length, leaked: text.includes(secret) || text.includes('04711') };
    }, { user: OFFICER.user, secret });
    assert.equal(leaked.n, mine.length);
    assert.equal(leaked.leaked, false, 'the records are sealed');

    await appLogin(page, other.user, other.password);
    await syncSettled(page);
    const seen = await ids(page);
    assert.deepEqual(new Set(seen), theirs, 'the second officer sees their commune only');
    assert.ok(!mine.some((r) => seen.includes(r.id)));
    await page.click('#logout');
    await page.click('#logout-keep');
    // The second officer's password does not open the first officer's store.
    await page.fill('#username', OFFICER.user);
    await page.fill('#password', other.password);
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#login-error')?.textContent.length > 0);
    assert.equal(await page.locator('#records').count(), 0);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test('a conflicting edit from a second phone shows both values, and which phone made each', async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const a = await phone(browser);
    const b = await phone(browser);
    for (const p of [a, b]) {
      await openApp(p.page, server.url);
      await appLogin(p.page, OFFICER.user, OFFICER.password);
      await syncSettled(p.page);
    }
    await a.page.click('[data-kind=news_item]');
    await a.page.fill('#f-published_on', '2026-11-02');
    await a.page.fill('#f-title', 'Bản gốc');
    await a.page.click('#save');
    await a.page.waitForFunction(() => document.querySelector('#record-state')?.textContent === 'đã gửi', null, { timeout: 60000 });
    const id = await a.page.evaluate(() => document.querySelector('#record') && window.location.href);
    assert.ok(id);
    await b.page.click('#sync');
    await syncSettled(b.page);
    const onServer = (await serverRecords(server.url, OFFICER.commune)).find((r) => r.title === 'Bản gốc');
    assert.ok(onServer);

    // Both edit the title offline, then come back.
    for (const [p, title] of [[a, 'Bản của máy A'], [b, 'Bản của máy B']]) {
      await p.ctx.setOffline(true);
      if (await p.page.locator('#back').count()) await p.page.click('#back');
      await p.page.click(`[data-id="${onServer.id}"]`);
      await p.page.click('#edit');
      await p.page.fill('#f-title', title);
      await p.page.click('#save');
      await p.page.waitForSelector('#record-state');
      assert.equal(await state(p.page), 'chờ gửi');
    }
    await a.ctx.setOffline(false);
    await a.page.waitForFunction(() => document.querySelector('#record-state')?.textContent !== 'chờ gửi', null, { timeout: 60000 });
    await b.ctx.setOffline(false);
    await b.page.waitForFunction(() => document.querySelector('#conflicts') !== null, null, { timeout: 60000 });
    await a.page.click('#sync');
    await a.page.waitForFunction(() => document.querySelector('#conflicts') !== null, null, { timeout: 60000 });
    const shown = await a.page.locator('#conflicts').innerText();
    assert.match(shown, /Bản của máy A — máy này/);
    assert.match(shown, /Bản của máy B — máy khác [0-9a-f]{6}/);
    assert.equal(await state(a.page), 'có xung đột');
    await screenshot(a.page, '05-xung-dot');
    // The reviewer sees the same conflict on the server.
    const conflicts = (await api(server.url, `/api/v1/conflicts?org_unit=${OFFICER.commune}`, { token: await token(server.url, { user: 'ransoat.caobang', password: 'demo-ransoat-2025' }) })).body;
    assert.ok(conflicts.some((c) => c.record_id === onServer.id && c.values.length === 2), JSON.stringify(conflicts));
  } finally {
    await browser.close();
    await server.stop();
  }
});
