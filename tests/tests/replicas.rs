//! Several `gesync-server serve --database …` processes on one PostgreSQL, behind a
//! round-robin TCP proxy (a load balancer without sticky sessions), answer as one server:
//! - phones of two communes sync through the proxy while one replica is SIGKILLed and started
//!   again;
//! - two officers make a conflicting edit; the district reviewer sees it on one replica and
//!   resolves it through another;
//! - at the end every replica returns the same records, figures and a valid audit chain, and
//!   every phone of a commune holds the same records, none lost or doubled;
//! - midway the store is finalized (`admin finalize-upgrade`) under the running replicas, which
//!   then write record metadata in the new form, read by all beside the old.
//!
//! And the database itself restarted during syncs: phones retry, nothing acknowledged is lost.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use client_sdk::{Client, FixedKey, RecordKind, StoreKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tests::{login_phone as login, seed_from_env, Api, ServerProcess, TestStore};

const BIN: &str = env!("CARGO_BIN_EXE_gesync-server-under-test");

fn phone(dir: &Path, name: &str) -> Client {
    Client::open(dir.join(name), FixedKey(StoreKey::random())).unwrap()
}

/// Syncs until it succeeds (a replica may die under it, the database may restart).
async fn sync_until_done(c: &mut Client) {
    for attempt in 0..200 {
        match c.sync(|_| {}).await {
            Ok(r) => {
                assert_eq!(r.rejected, 0, "nothing refused");
                if c.pending_count() == 0 {
                    return;
                }
            }
            Err(e) => {
                let _ = (attempt, e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("the phone never finished syncing");
}


/// What a replica answers: the district's records, the figures, the audit chain's verdict
/// (reading records is audited: the chain's length is compared separately).
async fn answers(url: &str) -> (BTreeMap<String, Value>, Value, Value) {
    let records = tests::server_views(url, "district", "047").await;
    let district = Api::login(url, "district").await;
    let (s, figures) = district.get("/api/v1/indicators?org_unit=047&period=2025").await;
    assert_eq!(s, 200, "{figures}");
    let admin = Api::login(url, "admin").await;
    let (s, audit) = admin.get("/api/v1/audit?limit=1").await;
    assert_eq!(s, 200, "{audit}");
    (records, figures, audit["chain"]["valid"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_behind_a_round_robin_proxy_answer_as_one_server() {
    let _cluster = CLUSTER.read().await;
    let seed = seed_from_env("replicas_behind_a_round_robin_proxy_answer_as_one_server");
    let mut rng = StdRng::seed_from_u64(seed);
    let store = TestStore::postgres();
    store.seed(0);
    let mut replicas: Vec<ServerProcess> = (0..3).map(|_| ServerProcess::spawn_on(Path::new(BIN), &store)).collect();
    let addrs: Vec<_> = replicas.iter().map(|r| r.addr).collect();
    let (proxy, per_replica) = tests::round_robin::start(addrs.clone()).await;
    let url = format!("http://{proxy}");

    let dir = tempfile::tempdir().unwrap();
    let mut phones = Vec::new();
    for (name, user) in [("a", "officer1"), ("b", "officer1b"), ("c", "officer2")] {
        let mut p = phone(dir.path(), name);
        login(&mut p, &url, user).await;
        phones.push(p);
    }
    let commune = |i: usize| if i < 2 { "04701" } else { "04702" };
    let url_of_store = match &store { TestStore::Postgres(u) => u.clone(), _ => unreachable!() };

    // Rounds of records and syncs; in round 2, replica 1 is SIGKILLed mid-round and started
    // again on the same address; before round 3 the store is finalized.
    for round in 0..5 {
        if round == 3 {
            assert_eq!(meta_forms(&url_of_store).1, 0, "no postcard before the store is finalized");
            let out = tests::run_cli(Path::new(BIN), &["admin", "finalize-upgrade", "--database", &url_of_store], None);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"form_level": 1, "was": 0}"#);
            // Each running replica takes the level up at its next watch of the store (every
            // 0.5 s), and says so in /metrics.
            for r in &replicas {
                let url = format!("http://{}", r.addr);
                let mut level = None;
                for _ in 0..100 {
                    level = tests::metrics_text(&url).await.and_then(|m| tests::metric_in(&m, "gesync_store_form_level"));
                    if level == Some(1) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert_eq!(level, Some(1), "replica {url} took up the finalization");
            }
        }
        for (i, p) in phones.iter_mut().enumerate() {
            for n in 0..rng.gen_range(2..6) {
                let date = ["2025-02-10", "2025-05-10", "2025-08-10"][(round + n) % 3];
                p.create(RecordKind::NewsItem, &json!({"commune": commune(i), "published_on": date, "title": format!("{round}/{n}")})).unwrap();
            }
        }
        if round == 2 {
            let killed = replicas.remove(1);
            let addr = killed.addr;
            killed.kill();
            for p in phones.iter_mut() {
                sync_until_done(p).await;
            }
            replicas.insert(1, ServerProcess::spawn_at(Path::new(BIN), &store, addr));
        } else {
            for p in phones.iter_mut() {
                sync_until_done(p).await;
            }
        }
    }

    // A conflicting edit of one 04701 record by its two officers.
    let shared = phones[0].ids(None)[0];
    for p in phones.iter_mut() {
        sync_until_done(p).await;
    }
    phones[0].set(shared, "title", &json!("sửa bởi a")).unwrap();
    phones[1].set(shared, "title", &json!("sửa bởi b")).unwrap();
    sync_until_done(&mut phones[0]).await;
    sync_until_done(&mut phones[1]).await;
    // Seen on replica 0, resolved through replica 2.
    let on_0 = Api::login(&format!("http://{}", addrs[0]), "district").await;
    let (s, queue) = on_0.get("/api/v1/conflicts?org_unit=047").await;
    assert_eq!(s, 200);
    let queue = queue.as_array().unwrap().clone();
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0]["path"], "title");
    let cid = queue[0]["id"].as_str().unwrap().to_string();
    let on_2 = Api::login(&format!("http://{}", addrs[2]), "district").await;
    assert_eq!(on_2.post(&format!("/api/v1/conflicts/{cid}/resolve"), json!({"value": "đã thống nhất"})).await.0, 204);
    assert!(on_0.get("/api/v1/conflicts?org_unit=047").await.1.as_array().unwrap().is_empty(), "replica 0 sees the resolution");

    for _ in 0..2 {
        for p in phones.iter_mut() {
            sync_until_done(p).await;
        }
    }

    // Every replica answers the same.
    let first = answers(&format!("http://{}", addrs[0])).await;
    for a in &addrs[1..] {
        let other = answers(&format!("http://{a}")).await;
        assert_eq!(other.0, first.0, "replica {a} lists other records");
        assert_eq!(other.1, first.1, "replica {a} gives other figures");
        assert_eq!(other.2, first.2, "replica {a} finds another audit chain");
    }
    // One audit chain: every replica reads the same entries, back to back.
    let admins = [Api::login(&format!("http://{}", addrs[0]), "admin").await, Api::login(&format!("http://{}", addrs[1]), "admin").await, Api::login(&format!("http://{}", addrs[2]), "admin").await];
    let mut chains = Vec::new();
    for admin in &admins {
        chains.push(admin.get("/api/v1/audit?limit=10000").await.1);
    }
    assert!(chains.iter().all(|c| *c == chains[0]), "the replicas read one audit chain");
    assert_eq!(chains[0]["chain"]["valid"], true);
    let (records, figures, chain) = first;
    assert_eq!(chain, true);
    assert_eq!(records[&shared.to_string()]["title"], "đã thống nhất");
    // Every phone of a commune holds exactly its commune's records, at the server's version.
    let total: usize = phones.iter().map(|p| p.ids(None).len()).sum();
    for (i, p) in phones.iter().enumerate() {
        let mine: BTreeMap<String, Value> = records.iter().filter(|(_, v)| v["commune"] == commune(i)).map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(tests::phone_views(p), mine, "phone {i} (seed {seed})");
    }
    assert_eq!(total, records.iter().filter(|(_, v)| v["commune"] == "04701").count() * 2 + records.iter().filter(|(_, v)| v["commune"] == "04702").count());
    // The proxy spread the phones over the replicas.
    let used = per_replica.iter().filter(|n| n.load(std::sync::atomic::Ordering::Relaxed) > 0).count();
    assert!(used >= 2, "connections per replica: {:?}", per_replica.iter().map(|n| n.load(std::sync::atomic::Ordering::Relaxed)).collect::<Vec<_>>());
    // Rows of both forms, read alike above: the running replicas wrote postcard once finalized.
    let (json_rows, postcard_rows) = meta_forms(&url_of_store);
    assert!(json_rows > 0 && postcard_rows > 0, "metadata rows: {json_rows} JSON, {postcard_rows} postcard");
    for r in replicas {
        r.kill();
    }
    // The figures the replicas kept up together equal a rebuild from the records, which
    // rewrites every record's metadata in the finalized store's form.
    let out = tests::run_cli(Path::new(BIN), &["admin", "rebuild-figures", "--database", &url_of_store], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(meta_forms(&url_of_store), (0, json_rows + postcard_rows), "every row rewritten in postcard");
    let again = ServerProcess::spawn_on(Path::new(BIN), &store);
    assert_eq!(answers(&again.url()).await.1, figures, "figures equal a rebuild");
    again.kill();
}

/// How many records' metadata rows are stored as JSON, and how many in postcard (a sealed row:
/// 0xC5, an 8-byte checksum, then the form's first byte: `{` or 1).
fn meta_forms(url: &str) -> (u64, u64) {
    let out = std::process::Command::new("psql")
        .args([
            url,
            "-Atqc",
            "SELECT count(*) FILTER (WHERE get_byte(v, 9) = 123) || ' ' || count(*) FILTER (WHERE get_byte(v, 9) = 1) \
             FROM gesync.kv WHERE substr(k, 1, 2) = 'm/'::BYTEA AND length(k) = 18 AND get_byte(v, 0) = 197",
        ])
        .output()
        .expect("psql (PostgreSQL's client, installed with the server by scripts/test.sh)");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut counts = text.split_whitespace().map(|n| n.parse().unwrap());
    (counts.next().unwrap(), counts.next().unwrap())
}

/// The restart test stops the whole PostgreSQL cluster: it runs alone (writer); the other tests
/// of this file, which would meet the stopped database, share it (readers).
static CLUSTER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The test command's `pg_ctl` for its cluster (see `scripts/test.sh`).
fn pg_ctl(action: &str) {
    let ctl = std::env::var("GESYNC_TEST_PG_CTL").expect("GESYNC_TEST_PG_CTL: run the tests with `bash scripts/test.sh`");
    let status = std::process::Command::new("sh").arg("-c").arg(format!("{ctl} -m fast {action}")).stdout(std::process::Stdio::null()).status().unwrap();
    assert!(status.success(), "pg_ctl {action}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_during_syncs_loses_nothing_acknowledged() {
    let _cluster = CLUSTER.write().await;
    let store = TestStore::postgres();
    store.seed(0);
    let server = ServerProcess::spawn_on(Path::new(BIN), &store);
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let mut a = phone(dir.path(), "a");
    login(&mut a, &url, "officer1").await;
    for n in 0..20 {
        a.create(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-03-01", "title": format!("{n}")})).unwrap();
    }
    sync_until_done(&mut a).await;
    let acknowledged = tests::phone_views(&a);

    // The database stops: the replica answers 503 with a clear error, and /healthz says so.
    pg_ctl("stop");
    for n in 0..10 {
        a.create(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-03-02", "title": format!("while down {n}")})).unwrap();
    }
    assert!(a.sync(|_| {}).await.is_err(), "no sync while the database is down");
    let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert_eq!(a.pending_count(), 10, "nothing was taken for stored");

    // It comes back: the same replica recovers by itself, the phone's retries go through.
    pg_ctl("start");
    sync_until_done(&mut a).await;
    assert_eq!(reqwest::get(format!("{url}/healthz")).await.unwrap().status().as_u16(), 200);
    let (records, _, chain) = answers(&url).await;
    assert_eq!(records.len(), 30);
    for id in acknowledged.keys() {
        assert!(records.contains_key(id), "acknowledged record {id} lost");
    }
    assert_eq!(chain, true);
    // A graceful stop on PostgreSQL ends cleanly.
    let mut server = server;
    let _ = std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status();
    assert!(server.child.wait().unwrap().success(), "SIGTERM: a clean exit");
}

/// Whether some session holds the write lock row now (`FOR UPDATE NOWAIT` from psql).
fn write_lock_is_held(url: &str) -> bool {
    let out = std::process::Command::new("psql")
        .args([url, "-Atqc", "BEGIN; SELECT id FROM gesync.write_lock WHERE id = 1 FOR UPDATE NOWAIT; ROLLBACK;"])
        .output()
        .expect("psql (PostgreSQL's client, installed with the server by scripts/test.sh)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() || stderr.contains("could not obtain lock"), "psql: {stderr}");
    !out.status.success()
}

fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

/// Issue "Nothing lost", item 2: a replica frozen (SIGSTOP: a host frozen, a partition) while it
/// holds the write lock held every replica's writes for as long as the TCP timeout. Now the
/// database ends the frozen session within about 5 s (`idle_in_transaction_session_timeout`),
/// the other replica's writes go on, the frozen one recovers after SIGCONT, and nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_frozen_while_it_holds_the_write_lock_holds_no_one_back() {
    let _cluster = CLUSTER.read().await;
    let store = TestStore::postgres();
    store.seed(0);
    let TestStore::Postgres(db_url) = store.clone() else { unreachable!() };
    let a = ServerProcess::spawn_on(Path::new(BIN), &store);
    let b = ServerProcess::spawn_on(Path::new(BIN), &store);
    let dir = tempfile::tempdir().unwrap();
    let mut on_a = phone(dir.path(), "a");
    let mut on_b = phone(dir.path(), "b");
    login(&mut on_a, &a.url(), "officer1").await;
    login(&mut on_b, &b.url(), "officer1").await;
    let news = |n: usize, title: &str| json!({"commune": "04701", "published_on": "2025-03-01", "title": format!("{title} {n}")});

    // Freeze A at a moment it holds the lock: push large batches through it and stop it again
    // and again until the lock is seen held while it is stopped.
    let mut frozen = false;
    let mut batch = 0;
    while !frozen && batch < 30 {
        batch += 1;
        for n in 0..300 {
            on_a.create(RecordKind::NewsItem, &news(n, &format!("a{batch}"))).unwrap();
        }
        let mut syncing = tokio::spawn(async move {
            let r = on_a.sync(|_| {}).await.map(|_| ());
            (on_a, r)
        });
        let done = loop {
            tokio::time::sleep(Duration::from_millis(3)).await;
            signal(a.child.id(), "-STOP");
            if write_lock_is_held(&db_url) {
                frozen = true;
                break None;
            }
            signal(a.child.id(), "-CONT");
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), &mut syncing).await {
                break Some(r.unwrap());
            }
        };
        match done {
            Some((phone, _)) => on_a = phone,
            None => {
                // A is frozen with the lock: B's writes go on all the same.
                on_b.create(RecordKind::NewsItem, &news(0, "b")).unwrap();
                let started = std::time::Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(60), on_b.sync(|_| {})).await;
                let took = started.elapsed();
                eprintln!("batch {batch}: replica A frozen holding the lock; B's sync took {took:?}");
                assert!(matches!(r, Ok(Ok(_))), "B's sync while A is frozen: {r:?}");
                assert_eq!(on_b.pending_count(), 0, "B's record acknowledged");
                signal(a.child.id(), "-CONT");
                let (phone, r) = syncing.await.unwrap();
                eprintln!("A's sync that was frozen mid-write ended: {r:?}");
                on_a = phone;
            }
        }
    }
    assert!(frozen, "A was never caught holding the lock in 30 batches");
    // A recovers by itself; everything either phone holds as acknowledged is stored.
    sync_until_done(&mut on_a).await;
    sync_until_done(&mut on_b).await;
    assert_eq!(reqwest::get(format!("{}/healthz", a.url())).await.unwrap().status().as_u16(), 200);
    let (records, _, chain) = answers(&b.url()).await;
    for id in tests::phone_views(&on_a).keys().chain(tests::phone_views(&on_b).keys()) {
        assert!(records.contains_key(id), "acknowledged record {id} lost");
    }
    assert_eq!(records.len(), batch * 300 + 1);
    assert_eq!(chain, true);
}
