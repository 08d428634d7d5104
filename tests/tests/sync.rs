//! End-to-end sync through the real server (sled on disk, HTTP on loopback) and the real SDK.

use std::path::Path;

use client_sdk::{Client, FixedKey, RecordKind, StoreKey, SyncStatus};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tests::{phone_views, proxy, seed_from_env, server_views, TestServer, PASSWORD};

fn phone(dir: &Path) -> Client {
    Client::open(dir, FixedKey(StoreKey::random())).unwrap()
}

async fn login(c: &mut Client, url: &str, user: &str) {
    c.login(url, user, PASSWORD, None).await.unwrap();
}

fn news(commune: &str, date: &str) -> Value {
    json!({"commune": commune, "published_on": date, "channel": "loudspeaker", "title": "Tin bình đẳng giới"})
}

fn case(commune: &str) -> Value {
    json!({"commune": commune, "detected_on": "2025-03-01", "victim": {"sex": "female", "birth_year": 1990},
           "perpetrator": {"detected": true, "prosecuted": false}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phones_exchange_records_and_edits() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let url = server.url();
    let mut a = phone(&dir.path().join("a"));
    let mut b = phone(&dir.path().join("b"));
    login(&mut a, &url, "officer1").await;
    login(&mut b, &url, "officer1b").await;

    let id = a.create(RecordKind::GbvCase, &case("04701")).unwrap();
    assert_eq!(a.status(id).unwrap(), SyncStatus::Pending);
    let r = a.sync(|_| {}).await.unwrap();
    assert_eq!((r.pushed, r.rejected), (1, 0));
    assert_eq!(a.status(id).unwrap(), SyncStatus::Synced);

    let r = b.sync(|_| {}).await.unwrap();
    assert_eq!(r.pulled, 1);
    assert_eq!(b.show(id).unwrap()["victim"]["sex"], "female");

    b.append(id, "services", &json!({"kind": "health", "provided_on": "2025-03-02"})).unwrap();
    b.set(id, "perpetrator.counselled", &json!(true)).unwrap();
    b.sync(|_| {}).await.unwrap();
    a.sync(|_| {}).await.unwrap();
    assert_eq!(phone_views(&a), phone_views(&b));
    assert_eq!(phone_views(&a), server_views(&url, "district", "04701").await);
    // A second sync with nothing new moves nothing.
    let r = a.sync(|_| {}).await.unwrap();
    assert_eq!((r.pushed, r.pulled), (0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_is_refused_with_its_reason_and_the_good_ones_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let mut a = phone(&dir.path().join("a"));
    login(&mut a, &server.url(), "officer1").await;
    let good = a.create(RecordKind::NewsItem, &news("04701", "2025-01-05")).unwrap();
    // Valid for the schema, but another commune's record: outside the officer's scope.
    let foreign = a.create(RecordKind::NewsItem, &news("04702", "2025-01-05")).unwrap();
    let unknown = a.create(RecordKind::NewsItem, &news("09999", "2025-01-05")).unwrap();
    let r = a.sync(|_| {}).await.unwrap();
    assert_eq!((r.pushed, r.rejected), (1, 2));
    assert_eq!(a.status(good).unwrap(), SyncStatus::Synced);
    match a.status(foreign).unwrap() {
        SyncStatus::Rejected { reason } => assert!(reason.contains("outside your scope"), "{reason}"),
        s => panic!("expected a rejection, got {s:?}"),
    }
    match a.status(unknown).unwrap() {
        SyncStatus::Rejected { reason } => assert!(reason.contains("unknown commune"), "{reason}"),
        s => panic!("expected a rejection, got {s:?}"),
    }
    let on_server = server_views(&server.url(), "district", "04702").await;
    assert!(on_server.is_empty(), "nothing of the refused record was stored");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_only_receive_records_of_their_scope() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let url = server.url();
    let mut a = phone(&dir.path().join("a"));
    let mut c = phone(&dir.path().join("c"));
    let mut d = phone(&dir.path().join("d"));
    login(&mut a, &url, "officer1").await;
    login(&mut c, &url, "officer2").await;
    login(&mut d, &url, "district").await;
    a.create(RecordKind::NewsItem, &news("04701", "2025-01-05")).unwrap();
    c.create(RecordKind::NewsItem, &news("04702", "2025-01-06")).unwrap();
    a.sync(|_| {}).await.unwrap();
    c.sync(|_| {}).await.unwrap();
    a.sync(|_| {}).await.unwrap();
    assert_eq!(a.list(None).unwrap().len(), 1, "officer1 sees only 04701");
    d.sync(|_| {}).await.unwrap();
    assert_eq!(d.list(None).unwrap().len(), 2, "district staff see the whole district");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noop_sync_does_not_grow_with_the_records_held() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let (paddr, counters) = proxy::start(server.addr).await;
    let url = format!("http://{paddr}");
    let mut a = phone(&dir.path().join("a"));
    login(&mut a, &url, "officer1").await;
    let mut noop_bytes = Vec::new();
    for n in [10, 300] {
        while a.list(None).unwrap().len() < n {
            a.create(RecordKind::NewsItem, &news("04701", "2025-02-01")).unwrap();
        }
        a.sync(|_| {}).await.unwrap();
        counters.reset();
        let r = a.sync(|_| {}).await.unwrap();
        assert_eq!((r.pushed, r.pulled), (0, 0));
        noop_bytes.push(counters.total());
    }
    assert!(noop_bytes[0] > 0);
    // Only the cursor's varint may grow (a byte or two per direction), never per record.
    assert!(noop_bytes[1] <= noop_bytes[0] + 8, "no-op sync bytes for 10 and 300 records: {noop_bytes:?}");
    assert!(noop_bytes[1] <= 1024, "a no-op sync costs {} bytes on the wire", noop_bytes[1]);
    server.stop().await;
}

/// The seeded simulation of issue 2: phones of one commune make random offline edits (the same
/// record and field concurrently too), sync in random orders through a proxy that cuts
/// connections, the server restarts now and then; at the end every phone and the server hold
/// identical JSON views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_phones_converge_through_faults_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let server = Running::InProcess(TestServer::start_fresh(&server_dir, PHONES).await, server_dir);
    simulate(server, dir.path(), "simulation_phones_converge_through_faults_and_restarts").await;
}

/// The same simulation on PostgreSQL, the server a process SIGKILLed at each restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_on_postgres_converges_through_faults_and_kills() {
    let dir = tempfile::tempdir().unwrap();
    let store = tests::TestStore::postgres();
    store.seed(PHONES);
    let server = Running::Process(tests::ServerProcess::spawn_on(Path::new(BIN), &store), store);
    simulate(server, dir.path(), "simulation_on_postgres_converges_through_faults_and_kills").await;
}

const BIN: &str = env!("CARGO_BIN_EXE_gesync-server-under-test");
const PHONES: usize = 6;

/// A server the simulation restarts on the same address.
enum Running {
    InProcess(TestServer, std::path::PathBuf),
    Process(tests::ServerProcess, tests::TestStore),
}

impl Running {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Running::InProcess(s, _) => s.addr,
            Running::Process(s, _) => s.addr,
        }
    }
    async fn restart(self) -> Running {
        let addr = self.addr();
        match self {
            Running::InProcess(s, dir) => {
                s.stop().await;
                Running::InProcess(TestServer::start_on(&dir, addr).await, dir)
            }
            Running::Process(s, store) => {
                s.kill();
                Running::Process(tests::ServerProcess::spawn_at(Path::new(BIN), &store, addr), store)
            }
        }
    }
    async fn stop(self) {
        match self {
            Running::InProcess(s, _) => s.stop().await,
            Running::Process(s, _) => s.kill(),
        }
    }
}

async fn simulate(mut server: Running, dir: &Path, name: &str) {
    let seed = seed_from_env(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = dir.to_path_buf();
    let addr = server.addr();
    let (paddr, counters) = proxy::start(addr).await;
    let url = format!("http://{paddr}");
    let mut phones = Vec::new();
    for i in 0..PHONES {
        let mut p = phone(&dir.join(format!("phone{i}")));
        login(&mut p, &url, &format!("phone{i}")).await;
        phones.push(p);
    }
    let sexes = ["female", "male", "other", "unknown"];
    for step in 0..120 {
        let i = rng.gen_range(0..PHONES);
        let p = &mut phones[i];
        let ids = p.ids(None);
        match rng.gen_range(0..10) {
            0 | 1 => {
                p.create(RecordKind::GbvCase, &case("04701")).unwrap();
            }
            2 => {
                p.create(RecordKind::NewsItem, &news("04701", &format!("2025-0{}-1{}", rng.gen_range(1..10), rng.gen_range(0..9)))).unwrap();
            }
            3 | 4 if !ids.is_empty() => {
                let id = ids[rng.gen_range(0..ids.len())];
                let kind = p.show(id).unwrap()["kind"].as_str().unwrap().to_string();
                if kind == "gbv_case" {
                    let _ = p.set(id, "victim.sex", &json!(sexes[rng.gen_range(0..4)]));
                } else {
                    let _ = p.set(id, "title", &json!(format!("Tin {step}")));
                }
            }
            5 if !ids.is_empty() => {
                let id = ids[rng.gen_range(0..ids.len())];
                let _ = p.append(id, "services", &json!({"kind": "legal_aid", "provider": format!("P{step}")}));
            }
            6 if !ids.is_empty() => {
                let id = ids[rng.gen_range(0..ids.len())];
                let _ = p.delete(id, "nhập trùng");
            }
            7 => {
                // Sync through a faulty link: connections are cut at random byte offsets.
                counters.cut_seed.store(rng.gen(), std::sync::atomic::Ordering::Relaxed);
                counters.cut_below.store(rng.gen_range(50..3000), std::sync::atomic::Ordering::Relaxed);
                let _ = p.sync(|_| {}).await;
                counters.cut_below.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            8 if rng.gen_bool(0.15) => {
                server = server.restart().await;
            }
            _ => {
                p.sync(|_| {}).await.unwrap();
            }
        }
    }
    // Quiet network: two rounds so every phone sees everyone's last changes.
    for _ in 0..2 {
        for p in phones.iter_mut() {
            p.sync(|_| {}).await.unwrap();
        }
    }
    let reference = phone_views(&phones[0]);
    assert!(!reference.is_empty());
    for (i, p) in phones.iter().enumerate() {
        assert_eq!(p.pending_count(), 0, "phone {i} still has pending changes (seed {seed})");
        assert_eq!(phone_views(p), reference, "phone {i} differs from phone 0 (seed {seed})");
    }
    assert_eq!(server_views(&url, "district", "04701").await, reference, "server differs (seed {seed})");
    server.stop().await;
}

/// A load balancer in front of two replicas while they are replaced one by one: every other
/// request goes to a replica of a build before the records dictionary. That replica refuses a
/// request made with the dictionary (400 `bad_sync_message`, as such a build does) and does
/// not know the flags that ask for the dictionary or for its time. Counts its refusals.
fn mixed_replicas(url: &str) -> (std::sync::Arc<impl client_sdk::Transport>, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use sync_protocol::wire::{SyncRequest, FLAG_RECORDS_DICT, FLAG_SERVER_TIME, FRAME_RECORDS_DICT};
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = refused.clone();
    let lb = tests::Rewriting::new(url, move |n, body| {
        if n % 2 == 0 {
            return Ok(body);
        }
        if body[5] & FRAME_RECORDS_DICT != 0 {
            counted.fetch_add(1, Ordering::Relaxed);
            return Err(client_sdk::TransportError::status(400, "bad_sync_message", "malformed sync message: unknown flags 0x03"));
        }
        let (mut req, framing) = SyncRequest::decode_framed(&body).unwrap();
        req.accept &= !(FLAG_RECORDS_DICT | FLAG_SERVER_TIME);
        Ok(req.encode_as(framing))
    });
    (std::sync::Arc::new(lb), refused)
}

/// Phones behind replicas of two builds: a request made with the records dictionary that the
/// older one cannot read goes again at once without it, and both the push and the first sync
/// of another phone end with every record, nothing lost (`Session::unread_dictionary`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_sync_through_replicas_of_two_builds_one_without_the_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("server"), 0).await;
    let url = server.url();
    let options = client_sdk::SyncOptions { first_push_page: 4096, first_pull_page: 4096, ..Default::default() };
    let ((lb_a, refused_a), (lb_b, refused_b)) = (mixed_replicas(&url), mixed_replicas(&url));
    let mut a = phone(&dir.path().join("a")).with_transport(lb_a);
    let mut b = phone(&dir.path().join("b")).with_transport(lb_b);
    login(&mut a, &url, "officer1").await;
    login(&mut b, &url, "officer1b").await;
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..40 {
        a.create(RecordKind::GbvCase, &tests::field::field_case(&mut rng, 0)).unwrap();
    }
    let r = a.sync_with(&options, |_| {}).await.expect("the push goes on without the dictionary");
    assert_eq!((r.pushed, r.rejected), (40, 0));
    assert_eq!(refused_a.load(std::sync::atomic::Ordering::Relaxed), 1, "refused once, then without it");
    let r = b.sync_with(&options, |_| {}).await.expect("the first sync goes on without the dictionary");
    assert_eq!(r.pulled, 40);
    assert_eq!(refused_b.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(phone_views(&a), phone_views(&b));
    assert_eq!(phone_views(&b), server_views(&url, "district", "04701").await);
    server.stop().await;
}
