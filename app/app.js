// The officer's app. Everything about records and sync is decided by the WebAssembly core
// (client-core and sync-protocol, the same Rust code gesync-field runs); this file is the
// screens, IndexedDB sealed with a key derived from the officer's password (WebCrypto), and
// fetch. Nothing here logs record contents, tokens or passwords.
import init, { Phone, schema as coreSchema, backoffMs, refusal } from './pkg/client_wasm.js';

// ---- words -------------------------------------------------------------------------------
const WORDS = {
  vi: {
    app: 'gesync — Cán bộ xã', opening: 'Đang mở ứng dụng…', online: 'Có mạng', offline: 'Mất mạng',
    username: 'Tên đăng nhập', password: 'Mật khẩu', login: 'Đăng nhập', loginHelp: 'Lần đầu trên máy này cần có mạng. Sau đó có thể mở khoá khi không có mạng.',
    wrongPassword: 'Sai tên đăng nhập hoặc mật khẩu.', needNetwork: 'Lần đăng nhập đầu tiên trên máy này cần có mạng.',
    passwordChanged: 'Mật khẩu đã được đổi trên máy chủ: hãy đăng nhập bằng mật khẩu mới khi có mạng.',
    unreachable: 'Không kết nối được máy chủ. Dữ liệu vẫn được giữ trên máy; ứng dụng sẽ tự thử lại.',
    throttled: 'Máy chủ yêu cầu chờ {s} giây rồi thử lại.', busy: 'Máy chủ đang bận, sẽ tự thử lại.',
    revoked: 'Thiết bị này đã bị quản trị viên thu hồi: dữ liệu trên máy đã được xoá.',
    disabled: 'Tài khoản đã bị khoá: dữ liệu trên máy đã được xoá.',
    sessionEnded: 'Phiên đăng nhập đã hết: hãy đăng nhập lại khi có mạng.',
    records: 'Hồ sơ của xã', newRecord: 'Thêm hồ sơ', sync: 'Đồng bộ', syncing: 'Đang đồng bộ…',
    synced: 'Đã đồng bộ lúc {t}', neverSynced: 'Chưa đồng bộ', received: '{n} / {total} hồ sơ', bytes: '{down} KB nhận, {up} KB gửi',
    toOffer: 'Đang đối chiếu với máy chủ: còn {n} hồ sơ',
    pending: 'chờ gửi', syncedState: 'đã gửi', rejected: 'bị từ chối', conflict: 'có xung đột',
    pendingCount: '{n} hồ sơ chờ gửi', search: 'Tìm theo loại và ngày', kind: 'Loại hồ sơ', allKinds: 'Tất cả', from: 'Từ ngày', to: 'Đến ngày',
    none: 'Chưa có hồ sơ nào.', noneFound: 'Không có hồ sơ phù hợp.',
    gbv_case: 'Nạn nhân bạo lực', trafficking_returnee: 'Người bị mua bán trở về', news_item: 'Tin bình đẳng giới',
    save: 'Lưu', cancel: 'Huỷ', back: '← Danh sách', edit: 'Sửa', delete: 'Xoá hồ sơ', reason: 'Lý do xoá', confirmDelete: 'Xoá',
    add: 'Thêm', addEntry: 'Thêm mục', yes: 'Có', no: 'Không', unset: '—', saved: 'Đã lưu trên máy.',
    conflicts: 'Giá trị xung đột (cán bộ rà soát sẽ quyết định)', thisDevice: 'máy này', otherDevice: 'máy khác',
    rejectedWhy: 'Máy chủ từ chối: {r}', deleted: 'Đã xoá', logout: 'Đăng xuất', keep: 'Đăng xuất, giữ dữ liệu trên máy',
    wipe: 'Đăng xuất và xoá dữ liệu trên máy', wipePending: 'Còn {n} hồ sơ chưa gửi: xoá sẽ mất chúng vĩnh viễn. Vẫn xoá?',
    persistRefused: 'Trình duyệt chưa cho phép lưu dữ liệu lâu dài. Đừng xoá dữ liệu trình duyệt khi còn hồ sơ chưa gửi: chúng sẽ mất vĩnh viễn.',
    missing: 'cần nhập', wrong_type: 'giá trị không đúng kiểu', not_in_enum: 'giá trị không nằm trong danh sách',
    bad_date: 'ngày không hợp lệ (năm-tháng-ngày)', out_of_range: 'số ngoài khoảng cho phép', too_long: 'quá dài',
    immutable: 'không thể sửa sau khi tạo', unknown_field: 'trường không có trong biểu mẫu', bad_org_unit: 'mã đơn vị không hợp lệ',
    field: 'Trường «{f}»: {p}', failed: 'Không thực hiện được: {m}', who: 'Người dùng: {u} · xã {c}',
  },
  en: {
    app: 'gesync — Commune officer', opening: 'Opening…', online: 'Online', offline: 'Offline',
    username: 'Username', password: 'Password', login: 'Log in', loginHelp: 'The first login on this phone needs a connection. Afterwards you can unlock offline.',
    wrongPassword: 'Wrong username or password.', needNetwork: 'The first login on this phone needs a connection.',
    passwordChanged: 'The password was changed on the server: log in with the new one when online.',
    unreachable: 'Cannot reach the server. Your data stays on this phone; the app will try again.',
    throttled: 'The server asks to wait {s} seconds.', busy: 'The server is busy; the app will try again.',
    revoked: 'This device was revoked by an administrator: its data was wiped.',
    disabled: 'This account was disabled: the data on this phone was wiped.',
    sessionEnded: 'Your session ended: log in again when online.',
    records: "The commune's records", newRecord: 'New record', sync: 'Sync', syncing: 'Syncing…',
    synced: 'Synced at {t}', neverSynced: 'Not synced yet', received: '{n} / {total} records', bytes: '{down} KB down, {up} KB up',
    toOffer: 'Checking with the server: {n} records left',
    pending: 'waiting to send', syncedState: 'sent', rejected: 'refused', conflict: 'in conflict',
    pendingCount: '{n} records waiting to send', search: 'Search by kind and date', kind: 'Kind', allKinds: 'All', from: 'From', to: 'To',
    none: 'No records yet.', noneFound: 'No matching records.',
    gbv_case: 'Violence victim', trafficking_returnee: 'Trafficking returnee', news_item: 'Gender-equality news',
    save: 'Save', cancel: 'Cancel', back: '← List', edit: 'Edit', delete: 'Delete record', reason: 'Reason', confirmDelete: 'Delete',
    add: 'Add', addEntry: 'Add entry', yes: 'Yes', no: 'No', unset: '—', saved: 'Saved on this phone.',
    conflicts: 'Conflicting values (the reviewer decides)', thisDevice: 'this phone', otherDevice: 'another phone',
    rejectedWhy: 'Refused by the server: {r}', deleted: 'Deleted', logout: 'Log out', keep: 'Log out, keep data on this phone',
    wipe: 'Log out and wipe data on this phone', wipePending: '{n} records not sent yet: wiping loses them for good. Wipe anyway?',
    persistRefused: 'The browser did not grant lasting storage. Do not clear browser data while records are unsent: they would be lost for good.',
    missing: 'required', wrong_type: 'wrong type', not_in_enum: 'not one of the allowed values',
    bad_date: 'not a valid date (year-month-day)', out_of_range: 'out of range', too_long: 'too long',
    immutable: 'cannot change after creation', unknown_field: 'not a field of this form', bad_org_unit: 'not an org-unit code',
    field: 'Field «{f}»: {p}', failed: 'Could not do it: {m}', who: 'User: {u} · commune {c}',
  },
};
// Field and value labels (Vietnamese; English shows the field names as they are).
const LABELS = {
  detected_on: 'Ngày phát hiện', identified_on: 'Ngày tiếp nhận', published_on: 'Ngày đăng tin', setting: 'Hoàn cảnh',
  violence_types: 'Hình thức bạo lực', victim: 'Nạn nhân', sex: 'Giới tính', birth_year: 'Năm sinh', ethnic_minority: 'Dân tộc thiểu số',
  disability: 'Khuyết tật', services: 'Dịch vụ hỗ trợ đã nhận', kind: 'Loại', provided_on: 'Ngày cung cấp', provider: 'Đơn vị cung cấp',
  perpetrator: 'Người gây bạo lực', detected: 'Đã xác định', prosecuted: 'Bị xử lý', counselled: 'Đã được tư vấn', counselled_on: 'Ngày tư vấn',
  status: 'Tình trạng', notes: 'Ghi chú', needs_support: 'Cần hỗ trợ', support: 'Hỗ trợ đã nhận', reintegrated: 'Đã tái hoà nhập',
  channel: 'Kênh', title: 'Tiêu đề', commune: 'Xã',
  female: 'Nữ', male: 'Nam', other: 'Khác', unknown: 'Không rõ', domestic: 'Trong gia đình', other_gbv: 'Bạo lực giới khác',
  physical: 'Thể chất', psychological: 'Tinh thần', sexual: 'Tình dục', economic: 'Kinh tế', open: 'Đang xử lý', closed: 'Đã đóng',
  health: 'Y tế', psychosocial: 'Tâm lý - xã hội', legal_aid: 'Trợ giúp pháp lý', safe_shelter: 'Nơi tạm lánh', police_justice: 'Công an - tư pháp',
  social_assistance: 'Trợ giúp xã hội', essential_needs: 'Nhu cầu thiết yếu', education_vocational: 'Học nghề - giáo dục', livelihood: 'Sinh kế',
  loudspeaker: 'Loa truyền thanh', commune_website: 'Trang thông tin xã', bulletin_board: 'Bảng tin', social_media: 'Mạng xã hội',
};
let lang = localStorage.getItem('gesync.lang') || 'vi';
const t = (k, vars = {}) => (WORDS[lang][k] ?? WORDS.vi[k] ?? k).replace(/\{(\w+)\}/g, (_, v) => vars[v] ?? '');
const label = (name) => (lang === 'vi' && LABELS[name]) || name.replaceAll('_', ' ');
const num = (n) => Number(n).toLocaleString(lang === 'vi' ? 'vi-VN' : 'en-US');

// ---- sealed storage: one IndexedDB database per officer, its key from the password --------
const enc = new TextEncoder();
const dec = new TextDecoder();
const PBKDF2_ITERATIONS = 200000;

async function deriveKey(password, salt) {
  const base = await crypto.subtle.importKey('raw', enc.encode(password), 'PBKDF2', false, ['deriveKey']);
  return crypto.subtle.deriveKey({ name: 'PBKDF2', salt, iterations: PBKDF2_ITERATIONS, hash: 'SHA-256' }, base, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
}
async function seal(key, bytes, what) {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: enc.encode(what) }, key, bytes);
  return { iv, ct: new Uint8Array(ct) };
}
async function unseal(key, sealed, what) {
  const pt = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: sealed.iv, additionalData: enc.encode(what) }, key, sealed.ct);
  return new Uint8Array(pt);
}
const dbName = (user) => 'gesync-officer-' + user;
function openDb(user) {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(dbName(user), 1);
    r.onupgradeneeded = () => { r.result.createObjectStore('kv'); r.result.createObjectStore('records'); };
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}
function txn(db, mode, fn) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(['kv', 'records'], mode, { durability: 'strict' });
    const out = fn(tx);
    tx.oncomplete = () => resolve(out);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error('aborted'));
  });
}
const req = (r) => new Promise((resolve, reject) => { r.onsuccess = () => resolve(r.result); r.onerror = () => reject(r.error); });
async function kvGet(db, k) { return txn(db, 'readonly', (tx) => req(tx.objectStore('kv').get(k))).then((p) => p); }
function knownUsers() { return JSON.parse(localStorage.getItem('gesync.users') || '[]'); }
function rememberUser(u) { const s = new Set(knownUsers()); s.add(u); localStorage.setItem('gesync.users', JSON.stringify([...s])); }
function forgetUser(u) { localStorage.setItem('gesync.users', JSON.stringify(knownUsers().filter((x) => x !== u))); }

// ---- the open session ---------------------------------------------------------------------
// { user, key, db, phone, session: {device_id, access, refresh, org_unit}, lastSync, notice }
let S = null;
let schema = null;
const now = () => performance.now() / 1000;

async function saveSession() {
  const sealed = await seal(S.key, enc.encode(JSON.stringify(S.session)), 'session');
  await txn(S.db, 'readwrite', (tx) => tx.objectStore('kv').put(sealed, 'session'));
}
// Writes what the core changed: the records, then the state, in one transaction. One write
// at a time, in order: an edit saved while a sync answer is being stored must not let an older
// copy of a record land on disk after a newer one.
let writing = Promise.resolve();
function persist() {
  const next = writing.then(persistNow, persistNow);
  writing = next.catch(() => {});
  return next;
}
async function persistNow() {
  const s = S;
  if (!s) return;
  const w = s.phone.takeWrites();
  try {
    if (w.count === 0 && !w.state) return;
    // Everything read from the module before the first wait: the writes are this moment's.
    const plain = [];
    for (let i = 0; i < w.count; i++) plain.push([w.id(i), w.bytes(i)]);
    const stateText = w.state ? s.phone.state() : null;
    const puts = [];
    for (const [id, bytes] of plain) puts.push([id, bytes ? await seal(s.key, bytes, 'record:' + id) : null]);
    const state = stateText ? await seal(s.key, enc.encode(stateText), 'state') : null;
    await txn(s.db, 'readwrite', (tx) => {
      const rs = tx.objectStore('records');
      for (const [id, sealed] of puts) sealed ? rs.put(sealed, id) : rs.delete(id);
      if (state) tx.objectStore('kv').put(state, 'state');
    });
  } finally { w.free(); }
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (opts.token) headers.Authorization = 'Bearer ' + opts.token;
  if (opts.json) headers['Content-Type'] = 'application/json';
  return fetch(path, { method: opts.method || 'GET', headers, body: opts.json ? JSON.stringify(opts.json) : opts.body, cache: 'no-store' });
}
async function errorCode(resp) { try { return (await resp.json()).error?.code || ''; } catch { return ''; } }

// Logs in (online when possible) and opens the officer's sealed store.
async function login(user, password) {
  user = user.trim();
  const db = await openDb(user);
  let salt = await kvGet(db, 'salt');
  const fresh = !salt;
  if (fresh) salt = crypto.getRandomValues(new Uint8Array(16));
  const key = await deriveKey(password, salt);
  let session = null;
  if (!fresh) {
    try {
      session = JSON.parse(dec.decode(await unseal(key, await kvGet(db, 'session'), 'session')));
    } catch { db.close(); throw new Error(t('wrongPassword')); }
  } else {
    session = { device_id: 'app-' + [...crypto.getRandomValues(new Uint8Array(12))].map((b) => b.toString(16).padStart(2, '0')).join('') };
  }
  // Online: fresh tokens (a changed password is said plainly); offline: unlock only.
  let online = navigator.onLine;
  if (online) {
    let r = null;
    try { r = await api('/api/v1/auth/login', { method: 'POST', json: { username: user, password, device_id: session.device_id, device_proof: session.device_proof } }); } catch { online = false; }
    if (r && r.status === 200) {
      const tok = await r.json();
      // The device proof spares this phone the waits that others' wrong guesses cause.
      Object.assign(session, { access: tok.access_token, refresh: tok.refresh_token, device_proof: tok.device_proof });
      const me = await api('/api/v1/me', { token: session.access });
      if (me.ok) session.org_unit = (await me.json()).org_unit;
    } else if (r) {
      const code = await errorCode(r);
      if (code === 'device_revoked' || code === 'account_disabled') {
        db.close();
        if (!fresh) await wipeStore(user);
        throw new Error(t(code === 'device_revoked' ? 'revoked' : 'disabled'));
      }
      if (r.status === 429) throw new Error(t('throttled', { s: r.headers.get('Retry-After') || '60' }));
      if (fresh || r.status !== 401) { db.close(); throw new Error(r.status === 401 ? t('wrongPassword') : t('failed', { m: r.status })); }
      // The store opened with this password but the server refused it: changed on the server.
      S_notice = t('passwordChanged');
    }
  }
  if (fresh && !online) { db.close(); throw new Error(t('needNetwork')); }
  let phone;
  if (fresh) {
    phone = Phone.create();
    await txn(db, 'readwrite', (tx) => tx.objectStore('kv').put(salt, 'salt'));
  } else {
    phone = Phone.restore(dec.decode(await unseal(key, await kvGet(db, 'state'), 'state')));
    const [sealedRecords, ids] = await txn(db, 'readonly', (tx) => Promise.all([req(tx.objectStore('records').getAll()), req(tx.objectStore('records').getAllKeys())]));
    const plain = await Promise.all(ids.map((id, i) => unseal(key, sealedRecords[i], 'record:' + id)));
    for (const bytes of plain) phone.load(bytes);
  }
  S = { user, key, db, phone, session, lastSync: null, failures: 0, retryAt: 0, notice: S_notice };
  S_notice = null;
  await saveSession();
  await persist();
  rememberUser(user);
  localStorage.setItem('gesync.lastUser', user);
  // Ask for storage the browser will not clear by itself.
  if (navigator.storage && navigator.storage.persist) {
    S.persisted = await navigator.storage.persist().catch(() => false);
  }
}
let S_notice = null;

async function wipeStore(user) {
  await new Promise((resolve) => { const r = indexedDB.deleteDatabase(dbName(user)); r.onsuccess = r.onerror = r.onblocked = () => resolve(); });
  forgetUser(user);
}
async function lock(wipe) {
  if (!S) return;
  await writing; // what is being written finishes first
  if (!S) return;
  const user = S.user;
  S.phone.free();
  S.db.close();
  S = null;
  if (wipe) await wipeStore(user);
  render();
}

// ---- sync -----------------------------------------------------------------------------------
let syncing = false;
let progress = null;
let syncError = null;

async function refreshTokens() {
  const r = await api('/api/v1/auth/refresh', { method: 'POST', json: { refresh_token: S.session.refresh } });
  if (r.status !== 200) return errorCode(r).then((c) => ({ ok: false, code: c, status: r.status }));
  const tok = await r.json();
  Object.assign(S.session, { access: tok.access_token, refresh: tok.refresh_token });
  await saveSession();
  return { ok: true };
}

async function wipeBecause(why) {
  const user = S.user;
  S.phone.wipe();
  await lock(true);
  await wipeStore(user);
  loginMessage = t(why);
  render();
}

// One sync, to the end or to the first failure (which schedules a retry with backoff).
async function sync() {
  if (!S || syncing) return;
  if (!S.session.access) { syncError = t('sessionEnded'); render(); return; }
  syncing = true; syncError = null; progress = { received: 0, to_receive: null, bytes_up: 0, bytes_down: 0, to_offer: 0 };
  render();
  const phone = S.phone;
  try {
    phone.beginSync('{}', now());
    let refreshed = false;
    for (;;) {
      const body = phone.nextRequest(now());
      if (!body) break;
      let r;
      try {
        r = await api('/api/v1/sync', { method: 'POST', token: S.session.access, body, headers: { 'Content-Type': 'application/x-gesync' } });
      } catch {
        phone.failed(now());
        return scheduleRetry(t('unreachable'), null);
      }
      if (r.status === 200) {
        progress = JSON.parse(phone.answered(new Uint8Array(await r.arrayBuffer()), now()));
        await persist();
        refreshed = false;
        // On the list, what arrived shows as it arrives (a first sync on 2G takes minutes),
        // redrawn at most every 3 s and keeping the officer's place, but at once when it still
        // says there are no records; elsewhere only the bar moves.
        if (view.name === 'list' && (Date.now() - listDrawnAt > 3000 || (listDrawnCount === 0 && progress.received > 0))) {
          const y = window.scrollY;
          render();
          window.scrollTo(0, y);
        } else renderSyncBar();
        continue;
      }
      const code = await errorCode(r);
      // A replica of an older build could not read the records dictionary, or another replica
      // does not hold the pushes' page context: again at once, without it (decided by the core).
      if (phone.unreadDictionary(r.status, code)) continue;
      phone.failed(now());
      // What a refusal means is decided by the core (the same rule as gesync-field's).
      const what = refusal(r.status, code);
      if (what === 'wipe_device_revoked') return wipeBecause('revoked');
      if (what === 'wipe_account_disabled') return wipeBecause('disabled');
      if (what === 'refresh' && !refreshed) {
        const ok = await refreshTokens();
        if (ok.ok) { refreshed = true; continue; }
        const again = refusal(ok.status, ok.code);
        if (again === 'wipe_device_revoked') return wipeBecause('revoked');
        if (again === 'wipe_account_disabled') return wipeBecause('disabled');
        S.session.access = null; await saveSession();
        syncError = t('sessionEnded'); return;
      }
      if (what === 'refresh') { syncError = t('sessionEnded'); return; }
      if (what === 'retry_later') {
        const ra = Number(r.headers.get('Retry-After'));
        return scheduleRetry(r.status === 429 ? t('throttled', { s: ra || 60 }) : t('busy'), Number.isFinite(ra) && ra > 0 ? ra : null);
      }
      syncError = t('failed', { m: code || r.status });
      return;
    }
    S.failures = 0; S.retryAt = 0;
    S.lastSync = new Date();
  } catch (e) {
    syncError = t('failed', { m: parseError(e) });
  } finally {
    syncing = false;
    if (S) { await persist().catch(() => {}); render(); }
  }
}
function scheduleRetry(message, retryAfter) {
  S.failures += 1;
  const wait = backoffMs(S.failures, retryAfter ?? -1, 0.8 + Math.random() * 0.4);
  S.retryAt = Date.now() + wait;
  syncError = message;
}
// Sync by itself when the connection comes back, and every minute while there is work.
window.addEventListener('online', () => { renderNet(); if (S) { S.retryAt = 0; sync(); } });
window.addEventListener('offline', renderNet);
setInterval(() => {
  if (!S || syncing || !navigator.onLine || Date.now() < S.retryAt) return;
  const stale = !S.lastSync || Date.now() - S.lastSync > 5 * 60 * 1000;
  if (S.phone.pending() > 0 || stale || S.retryAt) sync();
}, 3000);

// ---- screens --------------------------------------------------------------------------------
const main = () => document.getElementById('main');
const h = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, '');
    else if (v !== false && v != null) e.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k != null) e.append(k.nodeType ? k : String(k));
  return e;
};
let view = { name: 'list' };
let listDrawnAt = 0;
let listDrawnCount = 0;
let loginMessage = null;
let filter = { kind: '', from: '', to: '' };

function parseError(e) {
  const text = typeof e === 'string' ? e : (e && e.message) || String(e);
  try {
    const j = JSON.parse(text);
    if (j.code === 'schema' && j.path) return t('field', { f: j.path.split('.').map(label).join(' › '), p: t(j.problem) });
    return j.message;
  } catch { return text; }
}
function renderNet() {
  const n = document.getElementById('net');
  n.textContent = navigator.onLine ? t('online') : t('offline');
}
let shownView = null;
function render() {
  // A new screen starts at its top; a screen drawn again (after a sync) keeps its place.
  const key = JSON.stringify([view.name, view.kind, view.id, !!S]);
  if (key !== shownView) { window.scrollTo(0, 0); shownView = key; }
  document.documentElement.lang = lang;
  document.getElementById('title').textContent = t('app');
  document.getElementById('lang').textContent = lang === 'vi' ? 'EN' : 'VI';
  renderNet();
  const m = main();
  m.replaceChildren();
  if (!S) return m.append(loginScreen());
  if (view.name === 'form') return m.append(formScreen(view.kind, view.id));
  if (view.name === 'record') return m.append(recordScreen(view.id));
  if (view.name === 'logout') return m.append(logoutScreen());
  m.append(listScreen());
}

function loginScreen() {
  const last = localStorage.getItem('gesync.lastUser') || '';
  const msg = h('p', { class: 'error', role: 'alert', id: 'login-error' }, loginMessage || '');
  const form = h('form', { class: 'card', id: 'login', onsubmit: async (ev) => {
    ev.preventDefault();
    const btn = form.querySelector('button'); btn.disabled = true; msg.textContent = '';
    try {
      await login(form.username.value, form.password.value);
      loginMessage = null; view = { name: 'list' }; render();
      if (navigator.onLine) sync();
    } catch (e) { msg.textContent = parseError(e); btn.disabled = false; }
  } },
    h('h2', {}, t('login')),
    h('label', { for: 'username' }, t('username')), h('input', { id: 'username', name: 'username', autocomplete: 'username', value: last, required: true, autocapitalize: 'none' }),
    h('label', { for: 'password' }, t('password')), h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
    h('p', { class: 'muted' }, t('loginHelp')), msg,
    h('button', { type: 'submit' }, t('login')));
  return form;
}

function statusOf(r) {
  if (r.conflicts && r.conflicts.length) return ['conflict', t('conflict')];
  if (r.sync_status === 'pending') return ['pending', t('pending')];
  if (r.sync_status === 'rejected') return ['rejected', t('rejected')];
  return ['synced', t('syncedState')];
}
const dateOf = (r) => r.detected_on || r.identified_on || r.published_on || '';

function syncBar() {
  const bar = h('section', { class: 'syncbar', id: 'syncbar', 'aria-live': 'polite' });
  const pending = S.phone.pending();
  const button = h('button', { id: 'sync', type: 'button', disabled: syncing, onclick: () => { S.retryAt = 0; sync(); } }, syncing ? t('syncing') : t('sync'));
  bar.append(h('div', { class: 'row' }, h('span', { id: 'pending-count' }, t('pendingCount', { n: num(pending) })), button));
  if (syncing && progress) {
    const total = progress.to_receive;
    if (total) bar.append(h('progress', { max: total, value: Math.min(progress.received, total) }));
    bar.append(h('p', { class: 'muted', id: 'progress' }, total != null ? t('received', { n: num(progress.received), total: num(total) }) + ' · ' : '',
      t('bytes', { down: num(Math.round(progress.bytes_down / 1024)), up: num(Math.round(progress.bytes_up / 1024)) })));
    if (progress.to_offer) bar.append(h('p', { class: 'muted' }, t('toOffer', { n: num(progress.to_offer) })));
  } else {
    bar.append(h('p', { class: 'muted', id: 'last-sync' }, S.lastSync ? t('synced', { t: S.lastSync.toLocaleTimeString(lang) }) : t('neverSynced')));
  }
  if (syncError) bar.append(h('p', { class: 'error', role: 'alert', id: 'sync-error' }, syncError));
  return bar;
}
function renderSyncBar() {
  const old = document.getElementById('syncbar');
  if (old) old.replaceWith(syncBar());
}

function listScreen() {
  listDrawnAt = Date.now();
  const wrap = h('div');
  if (S.notice) wrap.append(h('p', { class: 'alert' }, S.notice));
  if (S.persisted === false && S.phone.pending() > 0) wrap.append(h('p', { class: 'notice', id: 'persist-warning' }, t('persistRefused')));
  wrap.append(h('p', { class: 'muted' }, t('who', { u: S.user, c: S.session.org_unit || '?' })));
  wrap.append(syncBar());
  wrap.append(h('div', { class: 'toolbar' },
    ...['gbv_case', 'trafficking_returnee', 'news_item'].map((k) => h('button', { type: 'button', class: 'secondary', 'data-kind': k, onclick: () => { view = { name: 'form', kind: k }; render(); } }, '+ ' + t(k)))));
  const kinds = h('select', { id: 'filter-kind', onchange: (e) => { filter.kind = e.target.value; render(); } },
    h('option', { value: '' }, t('allKinds')), ...['gbv_case', 'trafficking_returnee', 'news_item'].map((k) => h('option', { value: k, selected: filter.kind === k }, t(k))));
  const from = h('input', { type: 'date', id: 'filter-from', value: filter.from, onchange: (e) => { filter.from = e.target.value; render(); } });
  const to = h('input', { type: 'date', id: 'filter-to', value: filter.to, onchange: (e) => { filter.to = e.target.value; render(); } });
  const all = JSON.parse(S.phone.listRecords());
  listDrawnCount = all.length;
  wrap.append(h('h2', {}, t('records'), ' ', h('span', { class: 'muted', id: 'record-count' }, '(' + num(all.length) + ')')));
  const filtering = filter.kind || filter.from || filter.to;
  wrap.append(h('details', { class: 'card', id: 'filters', open: !!filtering || null }, h('summary', {}, t('search')),
    h('label', { for: 'filter-kind' }, t('kind')), kinds,
    h('div', { class: 'row' }, h('div', {}, h('label', { for: 'filter-from' }, t('from')), from), h('div', {}, h('label', { for: 'filter-to' }, t('to')), to))));
  const shown = all.filter((r) => (!filter.kind || r.kind === filter.kind) && (!filter.from || dateOf(r) >= filter.from) && (!filter.to || dateOf(r) <= filter.to));
  const ul = h('ul', { class: 'list', id: 'records' });
  for (const r of shown.slice(0, 300)) {
    const [cls, text] = statusOf(r);
    const name = r.title || (r.victim && r.victim.sex ? label(r.victim.sex) : '') || r.notes || '';
    ul.append(h('li', {}, h('button', { type: 'button', 'data-id': r.id, onclick: () => { view = { name: 'record', id: r.id }; render(); } },
      h('span', {}, h('strong', {}, t(r.kind)), h('br'), h('span', { class: 'muted' }, dateOf(r) + (name ? ' · ' + String(name).slice(0, 40) : '') + (r.deleted ? ' · ' + t('deleted') : ''))),
      h('span', { class: 'badge ' + cls }, text))));
  }
  wrap.append(all.length === 0 ? h('p', { class: 'muted' }, t('none')) : shown.length === 0 ? h('p', { class: 'muted' }, t('noneFound')) : ul);
  wrap.append(h('p', {}, h('button', { type: 'button', class: 'secondary', id: 'logout', onclick: () => { view = { name: 'logout' }; render(); } }, t('logout'))));
  return wrap;
}

// One input for a schema field; `value` is the current value (edit) or undefined.
function input(field, path, value) {
  const id = 'f-' + path.replaceAll('.', '-');
  const wrap = h('div', { class: 'field' });
  const req = field.required ? ' *' : '';
  switch (field.type) {
    case 'enum': {
      wrap.append(h('label', { for: id }, label(field.name) + req));
      wrap.append(h('select', { id, 'data-path': path, 'data-type': 'enum' }, h('option', { value: '' }, t('unset')),
        ...field.values.map((v) => h('option', { value: v, selected: value === v }, label(v)))));
      break;
    }
    case 'bool': {
      wrap.append(h('label', { for: id }, label(field.name) + req));
      wrap.append(h('select', { id, 'data-path': path, 'data-type': 'bool' }, h('option', { value: '' }, t('unset')),
        h('option', { value: 'true', selected: value === true }, t('yes')), h('option', { value: 'false', selected: value === false }, t('no'))));
      break;
    }
    case 'set': {
      const fs = h('fieldset', { 'data-path': path, 'data-type': 'set' }, h('legend', {}, label(field.name)));
      for (const v of field.values) {
        const cid = id + '-' + v;
        fs.append(h('label', { class: 'inline', for: cid }, h('input', { type: 'checkbox', id: cid, value: v, checked: Array.isArray(value) && value.includes(v) }), label(v)));
      }
      wrap.append(fs);
      break;
    }
    case 'map': {
      const fs = h('fieldset', {}, h('legend', {}, label(field.name)));
      for (const sub of field.fields) fs.append(input(sub, path + '.' + sub.name, value ? value[sub.name] : undefined));
      wrap.append(fs);
      break;
    }
    case 'text': {
      wrap.append(h('label', { for: id }, label(field.name) + req));
      const long = field.name === 'notes';
      const attrs = { id, 'data-path': path, 'data-type': 'text' };
      wrap.append(long ? h('textarea', attrs, value ?? '') : h('input', Object.assign(attrs, { value: value ?? '' })));
      break;
    }
    default: {
      wrap.append(h('label', { for: id }, label(field.name) + req));
      const type = field.type === 'date' ? 'date' : field.type === 'int' ? 'number' : 'text';
      wrap.append(h('input', { id, type, 'data-path': path, 'data-type': field.type, value: value ?? '', min: field.min, max: field.max, inputmode: field.type === 'int' ? 'numeric' : null }));
    }
  }
  return wrap;
}
// The form's values as {path: value}; an empty input is `undefined` (not set).
function readForm(form) {
  const out = {};
  for (const el of form.querySelectorAll('[data-path]')) {
    const path = el.dataset.path;
    const type = el.dataset.type;
    if (type === 'set') { out[path] = [...el.querySelectorAll('input:checked')].map((c) => c.value); continue; }
    const v = el.value.trim();
    if (v === '') { out[path] = undefined; continue; }
    out[path] = type === 'bool' ? v === 'true' : type === 'int' ? Number(v) : v;
  }
  return out;
}
function nest(flat) {
  const obj = {};
  for (const [path, v] of Object.entries(flat)) {
    if (v === undefined || (Array.isArray(v) && v.length === 0)) continue;
    const parts = path.split('.');
    let o = obj;
    for (const p of parts.slice(0, -1)) o = o[p] ??= {};
    o[parts.at(-1)] = v;
  }
  return obj;
}
const getPath = (obj, path) => path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);

function formScreen(kind, id) {
  const existing = id ? JSON.parse(S.phone.showRecord(id)) : null;
  const spec = schema[kind];
  const msg = h('p', { class: 'error', role: 'alert', id: 'form-error' });
  const form = h('form', { class: 'card', id: 'record-form', novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    msg.textContent = '';
    const values = readForm(form);
    try {
      if (!existing) {
        const rec = nest(values);
        rec.commune = S.session.org_unit;
        const newId = S.phone.createRecord(kind, JSON.stringify(rec));
        await persist();
        view = { name: 'record', id: newId, saved: true };
      } else {
        for (const [path, v] of Object.entries(values)) {
          const old = getPath(existing, path);
          const same = JSON.stringify(old ?? null) === JSON.stringify(v ?? (Array.isArray(old) ? [] : null));
          if (same) continue;
          if (Array.isArray(v)) { for (const item of v) if (!(old || []).includes(item)) S.phone.editRecord(id, 'append', path, JSON.stringify(item)); continue; }
          S.phone.editRecord(id, 'set', path, JSON.stringify(v ?? null));
        }
        await persist();
        view = { name: 'record', id, saved: true };
      }
      render();
      if (navigator.onLine) sync();
    } catch (e) { msg.textContent = parseError(e); }
  } }, h('h2', {}, (existing ? t('edit') : t('newRecord')) + ': ' + t(kind)));
  for (const f of spec.fields) {
    if (['commune', 'deleted', 'deleted_reason'].includes(f.name) || f.type === 'list') continue;
    form.append(input(f, f.name, existing ? existing[f.name] : undefined));
  }
  form.append(msg, h('div', { class: 'row' }, h('button', { type: 'submit', id: 'save' }, t('save')),
    h('button', { type: 'button', class: 'secondary', onclick: () => { view = existing ? { name: 'record', id } : { name: 'list' }; render(); } }, t('cancel'))));
  return form;
}

function show(value) {
  if (value === true) return t('yes');
  if (value === false) return t('no');
  if (Array.isArray(value)) return value.map((v) => (typeof v === 'object' ? Object.entries(v).map(([k, x]) => label(k) + ': ' + show(x)).join(', ') : label(String(v)))).join('; ');
  if (value && typeof value === 'object') return Object.entries(value).filter(([, x]) => x != null && x !== '').map(([k, x]) => label(k) + ': ' + show(x)).join(', ');
  return label(String(value));
}

function recordScreen(id) {
  const r = JSON.parse(S.phone.showRecord(id));
  const spec = schema[r.kind];
  const wrap = h('div', { class: 'card', id: 'record' });
  const [cls, text] = statusOf(r);
  wrap.append(h('p', {}, h('button', { type: 'button', class: 'link', id: 'back', onclick: () => { view = { name: 'list' }; render(); } }, t('back'))));
  wrap.append(syncBar());
  wrap.append(h('h2', {}, t(r.kind)));
  wrap.append(h('p', {}, h('span', { class: 'badge ' + cls, id: 'record-state' }, text), view.saved ? h('span', { class: 'muted', role: 'status' }, ' ' + t('saved')) : null));
  view.saved = false;
  if (r.sync_error) wrap.append(h('p', { class: 'alert' }, t('rejectedWhy', { r: r.sync_error })));
  if (r.conflicts.length) {
    const c = h('section', { id: 'conflicts' }, h('h3', {}, t('conflicts')));
    for (const k of r.conflicts) {
      c.append(h('div', { class: 'conflict' }, h('strong', {}, k.path.split('.').map(label).join(' › ')),
        h('ul', {}, ...k.values.map((v) => h('li', {}, show(v.value), ' — ', v.this_device ? t('thisDevice') : t('otherDevice') + ' ' + v.device.slice(0, 6),
          ', ', new Date(v.at * 1000).toLocaleString(lang))))));
    }
    wrap.append(c);
  }
  const dl = h('dl');
  for (const f of spec.fields) {
    const v = r[f.name];
    if (v == null || v === '' || (Array.isArray(v) && v.length === 0) || f.name === 'deleted' && v === false) continue;
    if (f.type === 'map' && Object.values(v).every((x) => x == null)) continue;
    dl.append(h('dt', {}, label(f.name)), h('dd', {}, show(v)));
  }
  wrap.append(dl);
  if (!r.deleted) {
    wrap.append(h('div', { class: 'toolbar' }, h('button', { type: 'button', id: 'edit', onclick: () => { view = { name: 'form', kind: r.kind, id }; render(); } }, t('edit'))));
    for (const f of spec.fields.filter((x) => x.type === 'list')) wrap.append(appendForm(id, f));
    wrap.append(deleteForm(id));
  }
  return wrap;
}
function appendForm(id, field) {
  const msg = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'card', 'data-list': field.name, novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      S.phone.editRecord(id, 'append', field.name, JSON.stringify(nest(readForm(form))));
      await persist(); view = { name: 'record', id, saved: true }; render();
      if (navigator.onLine) sync();
    } catch (e) { msg.textContent = parseError(e); }
  } }, h('h3', {}, t('add') + ': ' + label(field.name)));
  for (const f of field.fields) form.append(input(f, f.name, undefined));
  form.append(msg, h('button', { type: 'submit' }, t('addEntry')));
  // Inputs of two list forms must not share ids.
  for (const el of form.querySelectorAll('[id]')) el.id = field.name + '-' + el.id;
  for (const el of form.querySelectorAll('label[for]')) el.htmlFor = field.name + '-' + el.htmlFor;
  return form;
}
function deleteForm(id) {
  const form = h('form', { class: 'card', id: 'delete-form', onsubmit: async (ev) => {
    ev.preventDefault();
    S.phone.editRecord(id, 'delete', '', JSON.stringify(form.reason.value));
    await persist(); view = { name: 'list' }; render();
    if (navigator.onLine) sync();
  } }, h('h3', {}, t('delete')), h('label', { for: 'reason' }, t('reason')), h('input', { id: 'reason', name: 'reason', required: true }),
  h('button', { type: 'submit', class: 'danger', id: 'confirm-delete' }, t('confirmDelete')));
  return form;
}
function logoutScreen() {
  const pending = S.phone.pending();
  return h('div', { class: 'card' }, h('h2', {}, t('logout')),
    h('p', {}, h('button', { type: 'button', id: 'logout-keep', onclick: () => lock(false) }, t('keep'))),
    h('p', {}, h('button', { type: 'button', class: 'danger', id: 'logout-wipe', onclick: () => {
      if (pending > 0 && !confirm(t('wipePending', { n: pending }))) return;
      lock(true);
    } }, t('wipe'))),
    h('p', {}, h('button', { type: 'button', class: 'secondary', onclick: () => { view = { name: 'list' }; render(); } }, t('cancel'))));
}

document.getElementById('lang').addEventListener('click', () => { lang = lang === 'vi' ? 'en' : 'vi'; localStorage.setItem('gesync.lang', lang); render(); });

// ---- start ----------------------------------------------------------------------------------
if ('serviceWorker' in navigator) navigator.serviceWorker.register('sw.js', { scope: './' }).catch(() => {});
await init();
schema = JSON.parse(coreSchema());
window.gesyncReady = true;
render();
