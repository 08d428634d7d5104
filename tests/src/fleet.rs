//! A fleet of simulated phones for load and fault runs: an org tree sized to the fleet (one
//! province, districts, communes, a few officers per commune), the real client SDK for every
//! phone (one shared HTTP connection pool, timed), the phases of a deadline rush (login, create
//! offline, sync, edit, sync, pull), and the exact end-state check against the server.
//!
//! Used by the `load` binary and by the fault and backup tests, so that every figure and every
//! fault run is checked by the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_sdk::{BoxFuture, Client, FixedKey, HttpConfig, HttpTransport, LoginRequest, RecordId, RecordKind, StoreKey, Tokens, Transport, TransportError};
use gesync_server::model::{OrgUnit, Role, User};
use gesync_server::Db;
use serde_json::{json, Value};

use crate::PASSWORD;

/// Province of the fleet's tree. Its district and commune codes are invented (see README).
pub const PROVINCE: &str = "67";

/// The shape of a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub phones: usize,
    pub records_per_phone: usize,
    pub phones_per_commune: usize,
    pub communes_per_district: usize,
}

impl FleetConfig {
    pub fn new(phones: usize, records_per_phone: usize) -> Self {
        FleetConfig { phones, records_per_phone, phones_per_commune: 5, communes_per_district: 10 }
    }
}

/// The org tree and accounts of a fleet.
#[derive(Debug, Clone)]
pub struct Layout {
    pub config: FleetConfig,
    /// District codes.
    pub districts: Vec<String>,
    /// (commune code, district code)
    pub communes: Vec<(String, String)>,
    /// (username, commune code), one per phone.
    pub phones: Vec<(String, String)>,
}

impl Layout {
    pub fn new(config: FleetConfig) -> Layout {
        let n_communes = config.phones.div_ceil(config.phones_per_commune.max(1)).max(1);
        let n_districts = n_communes.div_ceil(config.communes_per_district.max(1)).max(1);
        assert!(n_districts <= 100 && config.communes_per_district <= 100, "the code space holds 100 districts of 100 communes");
        // District `67dd` would not be 3 digits; districts are `6` + 2 digits, communes add 2 more.
        let districts: Vec<String> = (0..n_districts).map(|d| format!("6{d:02}")).collect();
        let communes: Vec<(String, String)> = (0..n_communes)
            .map(|c| {
                let d = &districts[c / config.communes_per_district];
                (format!("{d}{:02}", c % config.communes_per_district), d.clone())
            })
            .collect();
        let phones = (0..config.phones).map(|i| (format!("phone{i}"), communes[i % n_communes].0.clone())).collect();
        Layout { config, districts, communes, phones }
    }

    /// District staff account of a district.
    pub fn district_user(district: &str) -> String {
        format!("staff{district}")
    }

    /// Writes the tree and every account ([`PASSWORD`] for all) into a store.
    pub fn seed(&self, db: &Db) {
        let unit = |code: &str, name: String, parent: Option<&str>, level: &str| OrgUnit::new(code, name, parent.map(str::to_string), level);
        db.org_units().put_org_unit(unit(PROVINCE, "Tỉnh Đắk Nông".into(), None, "province"), None).unwrap();
        for d in &self.districts {
            db.org_units().put_org_unit(unit(d, format!("Huyện {d}"), Some(PROVINCE), "district"), None).unwrap();
        }
        for (c, d) in &self.communes {
            db.org_units().put_org_unit(unit(c, format!("Xã {c}"), Some(d), "commune"), None).unwrap();
        }
        // One argon2 hash for every account: at 48 MiB it costs ~50 ms each.
        let hash = gesync_server::auth::hash_password(PASSWORD);
        let mut users: Vec<(String, Role, String)> = vec![("admin".into(), Role::Admin, PROVINCE.into())];
        users.extend(self.districts.iter().map(|d| (Self::district_user(d), Role::DistrictStaff, d.clone())));
        users.extend(self.phones.iter().map(|(u, c)| (u.clone(), Role::CommuneOfficer, c.clone())));
        for (username, role, org_unit) in users {
            db.accounts().put_user(&User { username, role, org_unit, password_hash: hash.clone(), disabled: false, session_epoch: 0 }, true, None).unwrap();
        }
    }
}

/// The `i`-th record a phone creates in `commune`: the three kinds in turn, realistic fields.
pub fn record(i: usize, commune: &str) -> (RecordKind, Value) {
    let date = format!("2025-{:02}-{:02}", 1 + i % 12, 1 + (i * 7) % 28);
    match i % 3 {
        0 => (
            RecordKind::GbvCase,
            json!({
                "commune": commune, "detected_on": date, "setting": "domestic",
                "violence_types": ["physical", "psychological"],
                "victim": {"sex": if i.is_multiple_of(4) { "male" } else { "female" }, "birth_year": 1960 + (i % 50) as i64, "ethnic_minority": i.is_multiple_of(2), "disability": false},
                "services": [{"kind": "health", "provided_on": date, "provider": "Trạm y tế xã"}],
                "perpetrator": {"detected": true, "sex": "male", "prosecuted": false, "counselled": i.is_multiple_of(2)},
                "status": "open", "notes": "Ghi chú của cán bộ xã."
            }),
        ),
        1 => (
            RecordKind::TraffickingReturnee,
            json!({
                "commune": commune, "identified_on": date, "sex": "female", "birth_year": 1995,
                "needs_support": true, "support": [{"kind": "essential_needs", "provided_on": date}], "reintegrated": false
            }),
        ),
        _ => (RecordKind::NewsItem, json!({"commune": commune, "published_on": date, "channel": "loudspeaker", "title": format!("Tin bình đẳng giới số {i}")})),
    }
}

/// The owner's edit of a record of `kind`: (path, value).
pub fn owner_edit(kind: &str) -> (&'static str, Value) {
    match kind {
        "gbv_case" => ("status", json!("closed")),
        "trafficking_returnee" => ("reintegrated", json!(true)),
        _ => ("title", json!("Tin đã sửa")),
    }
}

/// A [`Transport`] over one shared [`HttpTransport`] that counts requests and failures and
/// times every sync request (the HTTP round trip alone, without the phone's own work).
pub struct TimedTransport {
    inner: HttpTransport,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// What each failed call said.
    pub errors: Mutex<Vec<String>>,
    pub sync_ms: Mutex<Vec<f64>>,
}

impl TimedTransport {
    pub fn new(server: &str) -> Arc<TimedTransport> {
        // The default 60 s timeout would hide a stall; a rush must still answer within it.
        let config = HttpConfig { timeout: Duration::from_secs(120), connect_timeout: Duration::from_secs(30), stall_timeout: Duration::from_secs(120) };
        Arc::new(TimedTransport { inner: HttpTransport::new(server, None, &config).unwrap(), requests: AtomicU64::new(0), failures: AtomicU64::new(0), errors: Mutex::new(Vec::new()), sync_ms: Mutex::new(Vec::new()) })
    }

    fn count<T>(&self, r: Result<T, TransportError>) -> Result<T, TransportError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &r {
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.errors.lock().unwrap().push(e.to_string());
        }
        r
    }
}

impl Transport for TimedTransport {
    fn login<'a>(&'a self, req: &'a LoginRequest) -> BoxFuture<'a, Result<Tokens, TransportError>> {
        Box::pin(async move {
            match self.inner.login(req).await {
                // "Come back in N seconds" during a login storm is an answer, not a failure.
                r @ Err(TransportError::Status { status: 429 | 503, .. }) => {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    r
                }
                r => self.count(r),
            }
        })
    }
    fn refresh<'a>(&'a self, refresh_token: &'a str) -> BoxFuture<'a, Result<Tokens, TransportError>> {
        Box::pin(async move { self.count(self.inner.refresh(refresh_token).await) })
    }
    fn sync<'a>(&'a self, access_token: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            let t = Instant::now();
            let r = self.inner.sync(access_token, body).await;
            if r.is_ok() {
                self.sync_ms.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
            }
            self.count(r)
        })
    }
}

/// One simulated phone.
pub struct Phone {
    pub username: String,
    pub commune: String,
    pub client: Client,
    /// Records this phone created.
    pub created: Vec<RecordId>,
    /// The owner's edits: (record, path, value), acknowledged once a later sync succeeded.
    pub edits: Vec<(RecordId, String, Value)>,
}

/// Outcome counters of a phase.
#[derive(Debug, Default, Clone)]
pub struct PhaseStats {
    pub calls: usize,
    pub errors: usize,
    /// Wall time of each successful `Client::sync` call, ms.
    pub sync_ms: Vec<f64>,
    pub wall_s: f64,
    /// Records the server accepted from the phones, and records the phones received.
    pub pushed: usize,
    pub pulled: usize,
}

impl PhaseStats {
    pub fn merge(&mut self, o: PhaseStats) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.pushed += o.pushed;
        self.pulled += o.pulled;
        self.sync_ms.extend(o.sync_ms);
        self.wall_s += o.wall_s;
    }
}

/// Opens a store for every phone of `layout` under `dir`, sharing `transport`.
pub fn phones(layout: &Layout, dir: &Path, transport: Arc<TimedTransport>) -> Vec<Phone> {
    layout
        .phones
        .iter()
        .map(|(u, c)| {
            let client = Client::open(dir.join(u), FixedKey(StoreKey::random())).unwrap().with_transport(transport.clone());
            Phone { username: u.clone(), commune: c.clone(), client, created: Vec::new(), edits: Vec::new() }
        })
        .collect()
}

/// Runs `f` on every phone at once (one task each) and returns the phones, in order, with the
/// number of errors.
pub async fn each<F, Fut>(phones: Vec<Phone>, f: F) -> (Vec<Phone>, PhaseStats)
where
    F: Fn(Phone) -> Fut,
    Fut: std::future::Future<Output = (Phone, PhaseStats)> + Send + 'static,
{
    let t = Instant::now();
    let tasks: Vec<_> = phones.into_iter().map(|p| tokio::spawn(f(p))).collect();
    let mut out = Vec::with_capacity(tasks.len());
    let mut stats = PhaseStats::default();
    for task in tasks {
        let (p, s) = task.await.expect("phone task panicked");
        stats.merge(s);
        out.push(p);
    }
    stats.wall_s = t.elapsed().as_secs_f64();
    (out, stats)
}

/// At most this many logins at once by default: a login is a one-time argon2 verification
/// (the server runs two at a time, ~50 ms each). Phones log in once; the rush is in the syncs.
/// `load --logins-at-once N` sends N at once instead (the login storm).
pub const LOGINS_AT_ONCE: usize = 16;

/// Logs a phone in (URL of the server as the phone stores it), at most [`LOGINS_AT_ONCE`] at once.
pub async fn login(p: Phone, url: String) -> (Phone, PhaseStats) {
    static LOGINS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LOGINS_AT_ONCE);
    login_within(p, url, &LOGINS).await
}

/// Logs a phone in, at most as many at once as `limit` allows. An answer asking to wait (503
/// while the server's hashing queue is full, 429) is honoured and the login tried again.
/// The phase's `sync_ms` holds how long each answer took.
pub async fn login_within(mut p: Phone, url: String, limit: &tokio::sync::Semaphore) -> (Phone, PhaseStats) {
    let mut s = PhaseStats::default();
    loop {
        let permit = limit.acquire().await.expect("login semaphore");
        let t = Instant::now();
        let r = p.client.login(&url, &p.username, PASSWORD, None).await;
        drop(permit);
        s.calls += 1;
        s.sync_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        match r {
            Ok(()) => return (p, s),
            Err(e @ (client_sdk::Error::Busy { .. } | client_sdk::Error::Throttled { .. })) if s.calls < 100 => {
                tokio::time::sleep(client_sdk::backoff(1, &e)).await;
            }
            Err(e) => {
                eprintln!("{}: login failed: {e}", p.username);
                s.errors += 1;
                return (p, s);
            }
        }
    }
}

/// Creates `n` records offline (file writes: run on the blocking pool).
pub async fn create(p: Phone, n: usize) -> (Phone, PhaseStats) {
    tokio::task::spawn_blocking(move || {
        let mut p = p;
        for i in 0..n {
            let (kind, rec) = record(p.created.len() + i, &p.commune);
            let id = p.client.create(kind, &rec).unwrap();
            p.created.push(id);
        }
        (p, PhaseStats::default())
    })
    .await
    .unwrap()
}

/// One `Client::sync`, timed. With `retry`, repeats until the phone has nothing pending
/// (through cut connections and restarts), counting each failed attempt as an error.
pub async fn sync(mut p: Phone, retry: bool) -> (Phone, PhaseStats) {
    let mut s = PhaseStats::default();
    loop {
        let t = Instant::now();
        let r = p.client.sync(|_| {}).await;
        s.calls += 1;
        match r {
            Ok(rep) if rep.rejected == 0 => {
                s.sync_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                s.pushed += rep.pushed;
                s.pulled += rep.pulled;
                if !retry || p.client.pending_count() == 0 {
                    return (p, s);
                }
            }
            Ok(rep) => {
                eprintln!("{}: {} records rejected", p.username, rep.rejected);
                s.errors += 1;
                return (p, s);
            }
            Err(e) => {
                s.errors += 1;
                if !retry {
                    eprintln!("{}: sync failed: {e}", p.username);
                    return (p, s);
                }
                if s.errors > 10_000 {
                    panic!("{}: sync never succeeded: {e}", p.username);
                }
                tokio::task::yield_now().await;
            }
        }
    }
}

/// When a phone starts a phase: a pseudo-random moment within `spread_ms`, from the run's seed,
/// the phase and the phone (SplitMix64 over FNV-1a), so that a run can be repeated exactly.
pub fn start_offset_ms(seed: u64, phase: u64, phone: &str, spread_ms: u64) -> u64 {
    if spread_ms == 0 {
        return 0;
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in phone.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let mut z = seed ^ h ^ phase.wrapping_mul(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    (z ^ (z >> 31)) % spread_ms
}

/// One sync (no retry) started `wait_ms` after the phase began.
pub async fn sync_after(p: Phone, wait_ms: u64) -> (Phone, PhaseStats) {
    if wait_ms > 0 {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    }
    sync(p, false).await
}

/// Edits a quarter of the phone's own records (one field each) and, when it holds a record of
/// another phone of its commune, adds a service/support entry or changes its channel: a
/// concurrent edit of the same document that the server must merge.
pub async fn edit(p: Phone) -> (Phone, PhaseStats) {
    tokio::task::spawn_blocking(move || {
        let mut p = p;
        let own: Vec<RecordId> = p.created.iter().copied().step_by(4).collect();
        for id in own {
            let kind = p.client.show(id).unwrap()["kind"].as_str().unwrap().to_string();
            let (path, value) = owner_edit(&kind);
            p.client.set(id, path, &value).unwrap();
            p.edits.push((id, path.to_string(), value));
        }
        let created: BTreeSet<RecordId> = p.created.iter().copied().collect();
        if let Some(other) = p.client.ids(None).into_iter().find(|id| !created.contains(id)) {
            let kind = p.client.show(other).unwrap()["kind"].as_str().unwrap().to_string();
            match kind.as_str() {
                "gbv_case" => p.client.append(other, "services", &json!({"kind": "psychosocial", "provided_on": "2025-06-01", "provider": p.username})).unwrap(),
                "trafficking_returnee" => p.client.append(other, "support", &json!({"kind": "health", "provided_on": "2025-06-02"})).unwrap(),
                _ => p.client.set(other, "channel", &json!("bulletin_board")).unwrap(),
            }
        }
        (p, PhaseStats::default())
    })
    .await
    .unwrap()
}

/// A record's JSON without the fields that are local to one side.
pub fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        for k in ["sync_status", "sync_error", "conflicts"] {
            o.remove(k);
        }
    }
    v
}

/// The server's records of every district, as district staff list them over the API: record
/// id → the list of views returned for it (more than one would be a duplicate).
pub async fn server_records(url: &str, layout: &Layout) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for d in &layout.districts {
        let (_, list) = crate::Api::login(url, &Layout::district_user(d)).await.get(&format!("/api/v1/records?org_unit={d}")).await;
        for v in list.as_array().unwrap_or_else(|| panic!("record list: {list}")) {
            out.entry(v["id"].as_str().unwrap().to_string()).or_default().push(comparable(v.clone()));
        }
    }
    out
}

/// What the end-state check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Records (or acknowledged edits) missing on the server or on a phone that should hold them.
    pub lost: usize,
    /// Records held more than once, or records nobody created.
    pub duplicates: usize,
    /// Records whose JSON differs between a phone and the server.
    pub mismatched: usize,
    pub server_records: usize,
}

impl Verdict {
    pub fn is_exact(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.mismatched == 0
    }
}

/// Checks the server against every phone. With `phones_complete`, each phone must also hold
/// exactly the records of its commune, identical to the server's (after a final pull).
pub fn check(server: &BTreeMap<String, Vec<Value>>, phones: &[Phone], phones_complete: bool) -> Verdict {
    let mut v = Verdict { server_records: server.len(), ..Default::default() };
    let mut expected: BTreeMap<String, &str> = BTreeMap::new(); // id → commune
    for p in phones {
        for id in &p.created {
            expected.insert(id.to_string(), &p.commune);
        }
    }
    for (id, views) in server {
        if views.len() > 1 || !expected.contains_key(id) {
            v.duplicates += views.len() - usize::from(expected.contains_key(id));
        }
    }
    for id in expected.keys() {
        if !server.contains_key(id) {
            v.lost += 1;
        }
    }
    for p in phones {
        for (id, path, value) in &p.edits {
            let Some(view) = server.get(&id.to_string()).and_then(|vs| vs.first()) else { continue };
            if view.pointer(&format!("/{}", path.replace('.', "/"))) != Some(value) {
                v.lost += 1;
            }
        }
        if !phones_complete {
            continue;
        }
        let held: BTreeMap<String, Value> = p.client.list(None).unwrap().into_iter().map(|r| (r["id"].as_str().unwrap().to_string(), comparable(r))).collect();
        for (id, commune) in &expected {
            if *commune == p.commune && !held.contains_key(id) {
                v.lost += 1;
            }
        }
        for (id, view) in &held {
            match server.get(id).and_then(|vs| vs.first()) {
                None => v.duplicates += usize::from(!expected.contains_key(id)),
                Some(s) if s != view => v.mismatched += 1,
                Some(_) => {}
            }
        }
    }
    v
}

/// Percentile (nearest rank) of a list of milliseconds.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
