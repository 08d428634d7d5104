//! Sync over the field's link (`../shared/field-link.md`), through `tests::slowlink`: slow,
//! with a delay per connection, and cut every few seconds. The real server, the real SDK.
//! - a new phone's first sync and its pushes complete, and the end state is exact;
//! - a record too large for any page arrives in slices that survive the cuts;
//! - a client that stalls mid-request is dropped after the idle bound, holding nothing that
//!   other phones need; connections past the cap are closed at once.

use std::collections::BTreeSet;
use std::time::Duration;

use client_sdk::{Client, FixedKey, RecordKind, StoreKey, SyncOptions};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tests::field::{check_exact, fill_commune, newcomer, COMMUNE};
use tests::slowlink::Link;
use tests::{Api, TestServer, PASSWORD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_phone_gets_every_record_over_a_link_that_keeps_dropping() {
    let seed = tests::seed_from_env("slow_link");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("s"), 0).await;
    let mut expected = fill_commune(&server.url(), dir.path(), 200, seed).await;
    // 6 KB/s down, 3 KB/s up, cut every 3 s: the pull alone needs several connections.
    let link = Link { down: 6_000.0, up: 3_000.0, connect_delay: Duration::from_millis(200), cut_every: Some(Duration::from_secs(3)) };
    let (phone, out, mine) = newcomer(server.addr, None, dir.path(), link, tests::field::Work { push: 30, daily: 3 }, &SyncOptions::default(), seed).await;
    eprintln!("{out:?}");
    expected.extend(mine);
    assert_eq!((out.pull_records, out.push_records, out.daily_records), (200, 30, 3), "{out:?}");
    assert!(out.cuts >= 2, "the link was cut while syncing: {out:?}");
    check_exact(&server.url(), &phone, &expected).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_any_page_arrives_in_slices_across_cuts() {
    let seed = tests::seed_from_env("slow_link_large");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("s"), 0).await;
    let mut expected = fill_commune(&server.url(), dir.path(), 10, seed).await;
    let mut other = Client::open(dir.path().join("other"), FixedKey(StoreKey::random())).unwrap();
    other.login(&server.url(), "officer1b", PASSWORD, None).await.unwrap();
    let big = case_with_long_history(&mut other, seed);
    assert_eq!(other.sync(|_| {}).await.unwrap().pushed, 1);
    expected.insert(big.to_string());

    // 8 KB/s cut every 4 s carries at most ~30 KB per connection: the record never fits whole.
    let link = Link { down: 8_000.0, up: 4_000.0, connect_delay: Duration::from_millis(200), cut_every: Some(Duration::from_secs(4)) };
    let slow = tests::slowlink::SlowLink::start(server.addr, link).await;
    let mut phone = Client::open(dir.path().join("phone"), FixedKey(StoreKey::random())).unwrap();
    phone.login(&slow.url(), "officer1", PASSWORD, None).await.unwrap();
    let options = SyncOptions { retry_for: Duration::from_secs(300), ..SyncOptions::default() };
    let mut largest_part = 0;
    let report = phone
        .sync_with(&options, |p| {
            if let Some((_, total)) = p.part {
                largest_part = largest_part.max(total);
            }
        })
        .await
        .unwrap();
    eprintln!("{report:?}, cuts {}", slow.stats.cuts.load(std::sync::atomic::Ordering::Relaxed));
    assert!(largest_part > 100_000, "the large record came in slices ({largest_part} bytes)");
    assert!(slow.stats.cuts.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    check_exact(&server.url(), &phone, &expected).await.unwrap();
    let on_server = Api::login(&server.url(), "district").await.get(&format!("/api/v1/records/{big}")).await.1;
    assert_eq!(phone.show(big).unwrap()["notes"], on_server["notes"]);
    assert!(!dir.path().join("phone/partial").exists(), "no slices are left behind");
    server.stop().await;
}

/// A case with a long history, made offline on `phone`: its notes rewritten 100 times, 1 KB of
/// hard-to-compress text each time (Automerge keeps every version), about 100 KB in all.
fn case_with_long_history(phone: &mut Client, seed: u64) -> client_sdk::RecordId {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let big = phone.create(RecordKind::GbvCase, &tests::field::field_case(&mut rng, 0)).unwrap();
    for _ in 0..100 {
        let text: String = (0..1024).map(|_| rng.sample(rand::distributions::Alphanumeric) as char).collect();
        phone.set(big, "notes", &json!(text)).unwrap();
    }
    big
}

/// A sync request whose body never finishes: the headers and a few bytes, then silence.
async fn stalled_sync(addr: std::net::SocketAddr, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/sync HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: {}\r\ncontent-length: 100000\r\n\r\nGSYN",
        sync_protocol::wire::CONTENT_TYPE
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Reads until the server closes the connection; how long that took.
async fn closed_within(s: &mut TcpStream, bound: Duration) -> Duration {
    let t = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(bound, s.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open past {bound:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => {} // an error answer (408) may come first; the close follows
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_dropped_after_the_idle_bound_and_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let limits = gesync_server::Limits { idle: Duration::from_secs(3), max_connections: 8, ..Default::default() };
    let server = TestServer::start_fresh_with(dir.path(), 0, limits).await;
    let officer = Api::login(&server.url(), "officer1").await;
    let mut phone = Client::open(dir.path().join("phone"), FixedKey(StoreKey::random())).unwrap();
    phone.login(&server.url(), "officer1b", PASSWORD, None).await.unwrap();
    let id = phone.create(RecordKind::NewsItem, &json!({"commune": COMMUNE, "published_on": "2025-02-01"})).unwrap();
    let mut stalled: Vec<TcpStream> = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_sync(server.addr, &officer.token).await);
    }
    // Meanwhile a phone syncs as usual, while the stalled requests are still open: they hold no
    // lock and no store state.
    assert_eq!(phone.sync(|_| {}).await.unwrap().pushed, 1);
    for s in &stalled {
        let mut buf = [0u8; 16];
        assert!(
            matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the stalled request was still open while the phone synced"
        );
    }
    // Each stalled connection is closed once it has been silent for the idle bound.
    for s in &mut stalled {
        closed_within(s, Duration::from_secs(10)).await;
    }
    let ids: BTreeSet<String> = [id.to_string()].into();
    check_exact_server_only(&server.url(), &ids).await;
    server.stop().await;
}

async fn check_exact_server_only(url: &str, ids: &BTreeSet<String>) {
    let (_, list) = Api::login(url, "district").await.get(&format!("/api/v1/records?org_unit={COMMUNE}")).await;
    let got: BTreeSet<String> = list.as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(&got, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once_and_slots_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let limits = gesync_server::Limits { idle: Duration::from_secs(1), max_connections: 4, ..Default::default() };
    let server = TestServer::start_fresh_with(dir.path(), 0, limits).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The fifth is closed without an answer.
    let mut fifth = TcpStream::connect(server.addr).await.unwrap();
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), fifth.read_to_end(&mut buf)).await.expect("closed at once");
    assert!(buf.is_empty(), "no answer past the cap: {}", String::from_utf8_lossy(&buf));
    // The silent ones are closed after the idle bound, and the server answers again.
    for s in &mut held {
        closed_within(s, Duration::from_secs(5)).await;
    }
    let r = reqwest::get(format!("{}/healthz", server.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_the_uplink_goes_up_in_slices_across_cuts() {
    let seed = tests::seed_from_env("slow_link_upload");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("s"), 0).await;
    // 4 KB/s up, cut every 5 s: under 20 KB per connection, for a record of about 100 KB.
    let link = Link { down: 16_000.0, up: 4_000.0, connect_delay: Duration::from_millis(200), cut_every: Some(Duration::from_secs(5)) };
    let slow = tests::slowlink::SlowLink::start(server.addr, link).await;
    let mut phone = Client::open(dir.path().join("phone"), FixedKey(StoreKey::random())).unwrap();
    phone.login(&slow.url(), "officer1", PASSWORD, None).await.unwrap();
    let big = case_with_long_history(&mut phone, seed);
    let small = phone.create(RecordKind::NewsItem, &json!({"commune": COMMUNE, "published_on": "2025-03-01"})).unwrap();
    let options = SyncOptions { retry_for: Duration::from_secs(300), ..SyncOptions::default() };
    let report = phone.sync_with(&options, |_| {}).await.unwrap();
    let cuts = slow.stats.cuts.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{report:?}, cuts {cuts}");
    assert_eq!((report.pushed, report.rejected), (2, 0));
    assert!(cuts >= 2, "the upload outlived several connections ({cuts} cuts)");
    let expected: BTreeSet<String> = [big.to_string(), small.to_string()].into();
    check_exact(&server.url(), &phone, &expected).await.unwrap();
    let on_server = Api::login(&server.url(), "district").await.get(&format!("/api/v1/records/{big}")).await.1;
    assert_eq!(phone.show(big).unwrap()["notes"], on_server["notes"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_holds_at_most_a_few_syncs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let limits = gesync_server::Limits { idle: Duration::from_secs(2), max_connections: 64, ..Default::default() };
    let server = TestServer::start_fresh_with(dir.path(), 0, limits).await;
    let officer = Api::login(&server.url(), "officer1").await;
    let mut stalled = Vec::new();
    for _ in 0..gesync_server::api::SYNCS_PER_USER {
        stalled.push(stalled_sync(server.addr, &officer.token).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sync = |token: String| {
        let url = server.url();
        async move {
            let body = sync_protocol::wire::SyncRequest::default().encode();
            let r = reqwest::Client::new().post(format!("{url}/api/v1/sync")).bearer_auth(token).header("content-type", sync_protocol::wire::CONTENT_TYPE).body(body).send().await.unwrap();
            (r.status().as_u16(), r.headers().get("retry-after").is_some())
        }
    };
    assert_eq!(sync(officer.token.clone()).await, (429, true), "a fifth sync of the same account");
    let other = Api::login(&server.url(), "officer1b").await;
    assert_eq!(sync(other.token.clone()).await.0, 200, "another account is not held back");
    // The stalled ones end at the idle bound and free their slots.
    for s in &mut stalled {
        closed_within(s, Duration::from_secs(10)).await;
    }
    assert_eq!(sync(officer.token.clone()).await.0, 200);
    server.stop().await;
}

/// Issue "Security, second review", item 3: twenty sockets from one address, each sending a
/// partial request head one byte at a time just often enough to beat the stall bound, kept the
/// server from answering `/healthz`. Now one address holds at most its share of the
/// connections, and a head that does not arrive within its deadline ends the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_from_one_address_cannot_hold_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let limits = gesync_server::Limits { idle: Duration::from_secs(5), max_connections: 20, per_address: 8, head: Duration::from_secs(2), ..Default::default() };
    let server = tests::TestServer::start_fresh_with(dir.path(), 0, limits).await;
    let mut socks = Vec::new();
    for _ in 0..20 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut c = s.connect(server.addr).await.unwrap();
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        socks.push(c);
    }
    // Ended by the server: closed, reset, or answered (a 408) — anything but silence.
    async fn ended(c: &mut tokio::net::TcpStream, wait: Duration) -> bool {
        let mut buf = [0u8; 256];
        tokio::time::timeout(wait, c.read(&mut buf)).await.is_ok()
    }
    // The server answers others meanwhile.
    gesync_server::server::install_crypto_provider();
    let health = tokio::time::timeout(Duration::from_secs(3), reqwest::get(format!("{}/healthz", server.url()))).await.expect("/healthz answered in time").unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let mut open = Vec::new();
    for mut c in socks {
        if !ended(&mut c, Duration::from_millis(300)).await {
            open.push(c);
        }
    }
    assert!(open.len() <= 8, "{} connections from one address kept", open.len());
    assert!(!open.is_empty());
    // The kept ones trickle a byte a second (within the 5 s stall bound) and are ended all the
    // same by the 2 s deadline for the whole head.
    let trickling = std::time::Instant::now();
    while !open.is_empty() && trickling.elapsed() < Duration::from_secs(8) {
        let mut still = Vec::new();
        for mut c in open {
            let _ = c.write_all(b"X").await;
            if !ended(&mut c, Duration::from_millis(100)).await {
                still.push(c);
            }
        }
        open = still;
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    // (Trickling every second, they never meet the 5 s stall bound: the head deadline ends them.)
    assert!(open.is_empty(), "{} trickling heads still held after {:?}", open.len(), trickling.elapsed());
    server.stop().await;
}

/// A load balancer in front of "two replicas" on the field's link: every other request goes to
/// one that does not hold this phone's page contexts (`FLAG_PAGE_CONTEXT`), as another replica
/// would not. The ids the request names are changed to ids the server never kept. Counts the
/// ids changed, and of those the push contexts (the requests the server then refuses).
fn other_replica(url: &str) -> (std::sync::Arc<impl client_sdk::Transport>, std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]>) {
    use std::sync::atomic::Ordering;
    use sync_protocol::wire::{FRAME_CONTEXT, FRAME_PUSH_CONTEXT};
    let renamed = std::sync::Arc::new([std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicUsize::new(0)]);
    let counted = renamed.clone();
    let lb = tests::Rewriting::new(url, move |n, mut body| {
        if n % 2 == 1 {
            // A request's ids follow its flags byte: the answer context it holds, then the push
            // context it was compressed against.
            let flags = body[5];
            let mut at = 6;
            for bit in [FRAME_CONTEXT, FRAME_PUSH_CONTEXT] {
                if flags & bit != 0 {
                    body[at..at + 8].iter_mut().for_each(|b| *b ^= 0xa5);
                    at += 8;
                    counted[0].fetch_add(1, Ordering::Relaxed);
                    if bit == FRAME_PUSH_CONTEXT {
                        counted[1].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(body)
    });
    (std::sync::Arc::new(lb), renamed)
}

/// Over 2G, pages go against the page before (and pushes against the pushes before), and a
/// replica that does not hold the context costs bytes, never a record: an answer it makes
/// cold, a push it refuses (400 `unknown_page_context`) goes again at once without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_go_against_the_page_before_and_a_replica_without_it_loses_nothing() {
    let seed = tests::seed_from_env("page_contexts");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("s"), 0).await;
    let mut expected = fill_commune(&server.url(), dir.path(), 150, seed).await;
    let link = Link { down: 8_000.0, up: 4_000.0, connect_delay: Duration::from_millis(100), cut_every: None };
    let slow = tests::slowlink::SlowLink::start(server.addr, link).await;
    let (lb, renamed) = other_replica(&slow.url());
    let mut phone = Client::open(dir.path().join("phone"), FixedKey(StoreKey::random())).unwrap().with_transport(lb);
    phone.login(&slow.url(), "officer1", PASSWORD, None).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..40 {
        expected.insert(phone.create(RecordKind::GbvCase, &tests::field::field_case(&mut rng, i)).unwrap().to_string());
    }
    // Small pages, so that both ways take several.
    let options = SyncOptions { first_pull_page: 16 * 1024, first_push_page: 8 * 1024, page_seconds: 0.5, ..SyncOptions::default() };
    let report = phone.sync_with(&options, |_| {}).await.unwrap();
    assert_eq!((report.pushed, report.pulled, report.rejected), (40, 150, 0), "{report:?}");
    check_exact(&server.url(), &phone, &expected).await.unwrap();
    let metrics = Api::login(&server.url(), "admin").await.get_text("/metrics").await;
    let counter = |name: &str| -> u64 { tests::metric_in(&metrics, name).unwrap() };
    let (hits, misses) = (counter("gesync_sync_page_context_hits_total"), counter("gesync_sync_page_context_misses_total"));
    eprintln!("{report:?}; page contexts: {hits} used, {misses} not held; {} ids renamed (seed {seed})", renamed[0].load(std::sync::atomic::Ordering::Relaxed));
    assert!(hits >= 2, "pages went against the page before ({hits})");
    // What the server holds for the phone, until its budget drops it: this device's last few.
    let held = counter("gesync_sync_page_context_bytes");
    assert!(held > 0 && held <= 4 * sync_protocol::wire::PAGE_CONTEXT_BYTES as u64, "{held} B of contexts held");
    assert!(misses >= 1 && renamed[0].load(std::sync::atomic::Ordering::Relaxed) >= 1, "the other replica held none ({misses})");
    // A push made against a context the server did not hold was refused, and went again.
    assert_eq!(renamed[1].load(std::sync::atomic::Ordering::Relaxed), 1, "once a sync: then pushes go without");
    assert!(report.retries >= 1, "{report:?}");
    server.stop().await;
}
