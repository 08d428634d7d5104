//! The field scenario of the 2G work, shared by `bench-2g` and the slow-link tests: a commune
//! holds case records with notes and services; a new phone joins over a slow, dropping link,
//! makes its first sync, then records new cases and pushes them. Every step goes through the
//! real SDK and the real server; the end state is checked exactly.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use client_sdk::{Client, FixedKey, HttpConfig, HttpTransport, RecordId, RecordKind, StoreKey, SyncOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::slowlink::{Link, SlowLink};
use crate::{Api, PASSWORD};

/// The commune of the scenario and its officers (from the harness tree).
pub const COMMUNE: &str = "04701";
const FILLER: &str = "officer1b";
const NEWCOMER: &str = "officer1";

/// A field clock's step: from a change time `t` (Unix seconds), the next, one to 121 minutes
/// later. Starting from 2025-01-01 (Vietnam), 1,350 steps span about two months. `bench-2g`'s
/// clock and the records dictionary's samples (`dict-samples`) both step by it, each from its
/// own start, so the dictionary's samples stay what they were trained from.
pub fn clock_step(t: i64) -> i64 {
    t + 60 + (t.wrapping_mul(2_654_435_761) >> 7).rem_euclid(7_200)
}

/// 2025-01-01 00:00 in Vietnam (UTC+7), where the field clocks start.
pub const CLOCK_START: i64 = 1_735_664_400;

const NOTE_WORDS: &[&str] = &[
    "nạn nhân", "chồng", "vợ", "con", "mẹ chồng", "bị đánh", "nhiều lần", "say rượu", "tối qua", "hàng xóm",
    "báo công an xã", "trưởng thôn", "đến nhà", "hòa giải", "không đồng ý", "bị thương", "ở tay", "ở mặt",
    "đưa đi", "trạm y tế", "khám", "tư vấn", "tâm lý", "hỗ trợ", "pháp lý", "nơi tạm lánh", "ba ngày",
    "đã về nhà", "theo dõi", "tiếp", "hội phụ nữ", "cam kết", "không tái phạm", "kinh tế khó khăn", "nợ",
    "bỏ học", "lên nương", "chợ phiên", "đồn biên phòng", "người Tày", "người Nùng", "người H'Mông",
    "không biết chữ", "phiên dịch", "điện thoại", "lần thứ hai", "lo sợ", "ly hôn", "tòa án huyện",
];

/// A gbv_case as an officer records it: services given, perpetrator details, and free-text
/// notes of 20–60 words drawn at random (notes are what makes pages hard to compress).
pub fn field_case(rng: &mut StdRng, i: usize) -> Value {
    let words = rng.gen_range(20..60);
    let notes: Vec<&str> = (0..words).map(|_| NOTE_WORDS[rng.gen_range(0..NOTE_WORDS.len())]).collect();
    let day = 1 + rng.gen_range(0..28);
    let month = 1 + rng.gen_range(0..12);
    let date = format!("2025-{month:02}-{day:02}");
    let mut services = vec![json!({"kind": "health", "provided_on": date, "provider": "Trạm y tế xã"})];
    if rng.gen_bool(0.5) {
        services.push(json!({"kind": "legal_aid", "provided_on": date, "provider": "Trung tâm trợ giúp pháp lý tỉnh"}));
    }
    if rng.gen_bool(0.3) {
        services.push(json!({"kind": "psychosocial", "provided_on": date, "provider": "Hội Liên hiệp Phụ nữ xã"}));
    }
    json!({
        "commune": COMMUNE, "detected_on": date, "setting": if i.is_multiple_of(5) { "other_gbv" } else { "domestic" },
        "violence_types": if rng.gen_bool(0.5) { json!(["physical", "psychological"]) } else { json!(["economic"]) },
        "victim": {"sex": if i.is_multiple_of(7) { "male" } else { "female" }, "birth_year": 1950 + rng.gen_range(0..60) as i64,
                   "ethnic_minority": rng.gen_bool(0.6), "disability": rng.gen_bool(0.05)},
        "services": services,
        "perpetrator": {"detected": true, "sex": "male", "prosecuted": rng.gen_bool(0.1), "counselled": rng.gen_bool(0.5)},
        "status": if rng.gen_bool(0.7) { "open" } else { "closed" },
        "notes": notes.join(" "),
    })
}

/// Fills the commune with `n` case records from another officer's phone over loopback (fast),
/// so the newcomer has them to pull. Returns their ids.
pub async fn fill_commune(url: &str, dir: &Path, n: usize, seed: u64) -> BTreeSet<String> {
    officer_adds(url, &dir.join("filler"), n, seed).await
}

/// The commune's other officer, on a new phone (its store at `store`) and a fast link, records
/// `n` cases made from `seed` and pushes them: their ids.
async fn officer_adds(url: &str, store: &Path, n: usize, seed: u64) -> BTreeSet<String> {
    let mut officer = Client::open(store, FixedKey(StoreKey::random())).unwrap();
    officer.login(url, FILLER, PASSWORD, None).await.unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let ids = (0..n).map(|i| officer.create(RecordKind::GbvCase, &field_case(&mut rng, i)).unwrap().to_string()).collect();
    let report = officer.sync(|_| {}).await.unwrap();
    assert_eq!((report.pushed, report.rejected), (n, 0), "the officer's records are all accepted");
    ids
}

/// What the newcomer's phone went through.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    pub link: String,
    pub login_s: f64,
    pub pull_records: usize,
    pub pull_attempts: usize,
    pub pull_s: f64,
    pub push_records: usize,
    pub push_attempts: usize,
    pub push_s: f64,
    pub bytes_down: u64,
    pub bytes_up: u64,
    /// Of those, the login's and the first sync's (the rest are the push's).
    pub first_sync_down: u64,
    pub first_sync_up: u64,
    /// The server's CPU seconds over the first sync, and over the push.
    pub first_sync_server_cpu_s: f64,
    pub push_server_cpu_s: f64,
    pub connections: u64,
    pub cuts: u64,
    pub retries: usize,
    /// The daily sync after the push (not in the figures above): the records another officer
    /// added, and the bytes and time it took to bring them.
    pub daily_records: usize,
    pub daily_down: u64,
    pub daily_up: u64,
    pub daily_s: f64,
}

impl Outcome {
    pub fn wall_s(&self) -> f64 {
        self.login_s + self.pull_s + self.push_s
    }
}

/// What happens after a newcomer's first sync ([`newcomer`]): it records `push` cases, then
/// another officer records `daily` that its daily sync brings.
#[derive(Debug, Clone, Copy)]
pub struct Work {
    pub push: usize,
    pub daily: usize,
}

/// A new phone of the commune's officer joins over `link` in front of `server`: logs in, makes
/// its first sync, then records `push` new cases offline and syncs them; then, a day later,
/// another officer records `daily` cases (on a fast link) and the phone's daily sync brings
/// them. Retries for as long as a person would keep the app open (30 minutes); the SDK sizes
/// pages itself. `server_pid`, a server in a process of its own, has its CPU counted in each
/// phase. Returns the phone, what it went through, and the ids of the records made here.
pub async fn newcomer(server: SocketAddr, server_pid: Option<u32>, dir: &Path, link: Link, work: Work, options: &SyncOptions, seed: u64) -> (Client, Outcome, BTreeSet<String>) {
    let Work { push, daily } = work;
    let slow = SlowLink::start(server, link).await;
    let http = HttpTransport::new(&slow.url(), None, &HttpConfig::default()).unwrap();
    let mut phone = Client::open(dir.join("newcomer"), FixedKey(StoreKey::random())).unwrap().with_transport(Arc::new(http.clone()));
    let options = SyncOptions { retry_for: Duration::from_secs(1800), ..options.clone() };
    let mut out = Outcome { link: link.describe(), ..Outcome::default() };

    let t = Instant::now();
    phone
        .login_with(&slow.url(), NEWCOMER, PASSWORD, None, options.retry_for, |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("login over the slow link failed: {e}"));
    out.login_s = t.elapsed().as_secs_f64();

    let server_cpu = || server_pid.map_or(0.0, crate::cpu_s);
    let (t, cpu) = (Instant::now(), server_cpu());
    let report = phone.sync_with(&options, |_| {}).await.unwrap_or_else(|e| panic!("first sync over {}: {e}", out.link));
    out.pull_s = t.elapsed().as_secs_f64();
    out.first_sync_server_cpu_s = server_cpu() - cpu;
    out.pull_records = phone.ids(None).len();
    out.pull_attempts = http.sync_requests() as usize;
    out.retries += report.retries;
    (out.first_sync_up, out.first_sync_down) = slow.stats.get();

    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed); // bench-2g makes the same records again
    let mut mine = BTreeSet::new();
    for i in 0..push {
        mine.insert(phone.create(RecordKind::GbvCase, &field_case(&mut rng, i)).unwrap().to_string());
    }
    let (t, cpu) = (Instant::now(), server_cpu());
    let report = phone.sync_with(&options, |_| {}).await.unwrap_or_else(|e| panic!("push over {}: {e}", out.link));
    out.push_s = t.elapsed().as_secs_f64();
    out.push_server_cpu_s = server_cpu() - cpu;
    out.push_records = report.pushed;
    out.push_attempts = http.sync_requests() as usize - out.pull_attempts;
    out.retries += report.retries;

    (out.bytes_up, out.bytes_down) = slow.stats.get();
    out.connections = slow.stats.connections.load(std::sync::atomic::Ordering::Relaxed);
    out.cuts = slow.stats.cuts.load(std::sync::atomic::Ordering::Relaxed);

    if daily > 0 {
        let added = officer_adds(&format!("http://{server}"), &dir.join("daily-officer"), daily, seed ^ 0xda11).await;
        let t = Instant::now();
        let report = phone.sync_with(&options, |_| {}).await.unwrap_or_else(|e| panic!("daily sync over {}: {e}", out.link));
        out.daily_s = t.elapsed().as_secs_f64();
        out.daily_records = report.pulled;
        let (up, down) = slow.stats.get();
        (out.daily_up, out.daily_down) = (up - out.bytes_up, down - out.bytes_down);
        mine.extend(added);
    }
    (phone, out, mine)
}


/// The exact end state: the phone holds `expected` (every record once, nothing else, nothing
/// pending), and the server lists each of them once to the commune's district staff.
pub async fn check_exact(url: &str, phone: &Client, expected: &BTreeSet<String>) -> Result<(), String> {
    let on_phone: BTreeSet<String> = phone.ids(None).iter().map(RecordId::to_string).collect();
    if on_phone != *expected {
        return Err(format!(
            "the phone holds {} records, {} expected ({} missing, {} unexpected)",
            on_phone.len(),
            expected.len(),
            expected.difference(&on_phone).count(),
            on_phone.difference(expected).count()
        ));
    }
    if phone.pending_count() != 0 {
        return Err(format!("{} records still pending on the phone", phone.pending_count()));
    }
    let (_, list) = Api::login(url, "district").await.get(&format!("/api/v1/records?org_unit={COMMUNE}")).await;
    let list = list.as_array().ok_or("the server's record list is not a list")?;
    let on_server: Vec<String> = list.iter().map(|v| v["id"].as_str().unwrap_or_default().to_string()).collect();
    let unique: BTreeSet<String> = on_server.iter().cloned().collect();
    if unique.len() != on_server.len() {
        return Err(format!("the server lists {} records twice", on_server.len() - unique.len()));
    }
    if unique != *expected {
        return Err(format!("the server holds {} records, {} expected", unique.len(), expected.len()));
    }
    Ok(())
}
