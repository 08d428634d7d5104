//! A restored backup must not lose what phones still hold (issue "Nothing lost"): a commune
//! with 20 records, a nightly backup, 10 more pushed and acknowledged, the store lost and the
//! backup restored, then 5 new records on another phone. The restored store has a new epoch;
//! each phone that meets it offers what it holds again and pulls its scope again, so that the
//! server and every phone end with all 35 records, once each. On the embedded store and on
//! PostgreSQL; and `admin new-epoch` (a failover onto a standby that was behind) likewise.

use std::path::Path;

use client_sdk::{Error, SyncStatus};
use tests::fleet::{self, FleetConfig, Layout, Phone, TimedTransport};
use tests::{run_cli, ServerProcess, TestStore};

const BIN: &str = env!("CARGO_BIN_EXE_gesync-server-under-test");

fn cli(args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_cli(Path::new(BIN), &args, None)
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Syncs until level; a phone whose session the restored server does not know logs in again,
/// as its officer would.
async fn sync(mut p: Phone, url: String) -> (Phone, fleet::PhaseStats) {
    for _ in 0..3 {
        match p.client.sync(|_| {}).await {
            Ok(r) => {
                let reasons: Vec<String> = p.client.list(None).unwrap().iter().filter_map(|r| r["sync_error"].as_str().map(str::to_string)).collect();
                assert_eq!(r.rejected, 0, "{}: records rejected: {reasons:?}", p.username);
                return (p, fleet::PhaseStats::default());
            }
            Err(Error::SessionExpired | Error::NotLoggedIn) => {
                p.client.login(&url, &p.username, tests::PASSWORD, None).await.unwrap();
            }
            Err(e) => panic!("{}: sync failed: {e}", p.username),
        }
    }
    panic!("{}: no sync after logging in again", p.username);
}

async fn sync_all(phones: Vec<Phone>, url: &str) -> Vec<Phone> {
    let u = url.to_string();
    fleet::each(phones, move |p| sync(p, u.clone())).await.0
}

fn synced(p: &Phone) -> usize {
    p.client.list(None).unwrap().iter().filter(|r| r["id"].as_str().and_then(|i| i.parse().ok()).is_some_and(|id| p.client.status(id).unwrap() == SyncStatus::Synced)).count()
}

/// The restore story on `store` (a fresh store), restored into `restored` (a fresh store).
/// `rewind` takes the server down and brings the older state back under a new epoch.
async fn restore_story(dir: &Path, store: TestStore, restored: TestStore) {
    let mut config = FleetConfig::new(3, 0);
    config.phones_per_commune = 3;
    let layout = Layout::new(config);
    let l = layout.clone();
    store.with_db(move |db| l.seed(db));
    let server = ServerProcess::spawn_on(Path::new(BIN), &store);
    let (addr, url) = (server.addr, server.url());
    let transport = TimedTransport::new(&url);
    let phones = fleet::phones(&layout, &dir.join("phones"), transport);
    let u = url.clone();
    let (phones, s) = fleet::each(phones, move |p| fleet::login(p, u.clone())).await;
    assert_eq!(s.errors, 0);
    let mut phones = phones.into_iter();
    let (a, b, c) = (phones.next().unwrap(), phones.next().unwrap(), phones.next().unwrap());

    // 20 records, held by every phone; the nightly backup.
    let (a, _) = fleet::create(a, 20).await;
    let a = sync_all(vec![a], &url).await.remove(0);
    let mut phones = sync_all(vec![a, b, c], &url).await;
    assert!(phones.iter().all(|p| p.client.list(None).unwrap().len() == 20));
    let backup = dir.join("nightly.gsb");
    ok(cli(&[vec!["backup".into()], store.args(), vec!["--out".into(), backup.display().to_string()]].concat()));

    // 10 more from phone A, acknowledged; phone B receives them.
    let a = phones.remove(0);
    let (a, _) = fleet::create(a, 10).await;
    let mut phones = sync_all(vec![a], &url).await.into_iter().chain(phones).collect::<Vec<_>>();
    assert_eq!(synced(&phones[0]), 30, "phone A's 30 records are acknowledged");
    phones = sync_all(phones, &url).await;
    assert_eq!(phones[1].client.list(None).unwrap().len(), 30);

    // The disk is lost; last night's backup is restored, and the server comes back at the same
    // address on it.
    server.kill();
    ok(cli(&[vec!["restore".into()], restored.args(), vec!["--from".into(), backup.display().to_string()]].concat()));
    let server = ServerProcess::spawn_at(Path::new(BIN), &restored, addr);
    assert_eq!(fleet::server_records(&url, &layout).await.len(), 20, "the backup holds the 20 records");

    // Phone C records 5 more and syncs first; then every phone syncs twice.
    let c = phones.pop().unwrap();
    let (c, _) = fleet::create(c, 5).await;
    phones.push(c);
    let phones = sync_all(phones, &url).await;
    let phones = sync_all(phones, &url).await;

    let on_server = fleet::server_records(&url, &layout).await;
    let verdict = fleet::check(&on_server, &phones, true);
    assert!(verdict.is_exact(), "{verdict:?}");
    assert_eq!(on_server.len(), 35, "the server holds every record some phone held");
    for p in &phones {
        assert_eq!(p.client.list(None).unwrap().len(), 35, "{} holds the commune's 35 records", p.username);
        assert_eq!(synced(p), 35, "{}: every record synced", p.username);
    }
    // Figures equal a recomputation from the documents on the restored store.
    drop(server);
    restored.with_db(|db| {
        let counters = db.figures().all_counters().unwrap();
        db.rebuild_figures().unwrap();
        assert_eq!(db.figures().all_counters().unwrap(), counters);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_backup_on_sled_loses_nothing_phones_hold() {
    let dir = tempfile::tempdir().unwrap();
    restore_story(dir.path(), TestStore::Embedded(dir.path().join("server")), TestStore::Embedded(dir.path().join("restored"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_backup_on_postgres_loses_nothing_phones_hold() {
    let dir = tempfile::tempdir().unwrap();
    restore_story(dir.path(), TestStore::postgres(), TestStore::postgres()).await;
}

/// A failover onto a standby that was behind, as the operator handles it: the older state comes
/// back (here: restored by hand, outside `restore`, so it keeps the old epoch) and the operator
/// runs `admin new-epoch`. Without it the phones could not tell; with it nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_new_epoch_after_a_failover_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = FleetConfig::new(2, 0);
    config.phones_per_commune = 2;
    let layout = Layout::new(config);
    let data = dir.path().join("server");
    let store = TestStore::Embedded(data.clone());
    let l = layout.clone();
    store.with_db(move |db| l.seed(db));
    let server = ServerProcess::spawn_on(Path::new(BIN), &store);
    let (addr, url) = (server.addr, server.url());
    let phones = fleet::phones(&layout, &dir.path().join("phones"), TimedTransport::new(&url));
    let u = url.clone();
    let (phones, _) = fleet::each(phones, move |p| fleet::login(p, u.clone())).await;
    let (phones, _) = fleet::each(phones, |p| fleet::create(p, 6)).await;
    // Twice: phones syncing at the same moment see each other's records the second time.
    let phones = sync_all(sync_all(phones, &url).await, &url).await;
    // The standby: a copy of the files as they are now (the server stopped for the copy).
    server.kill();
    let standby = dir.path().join("standby");
    tests::copy_dir(&data, &standby);
    let server = ServerProcess::spawn_at(Path::new(BIN), &store, addr);
    let (phones, _) = fleet::each(phones, |p| fleet::create(p, 4)).await;
    let phones = sync_all(sync_all(phones, &url).await, &url).await;
    assert!(phones.iter().all(|p| synced(p) == 20));
    // The primary is lost; the standby, behind, is promoted with a new epoch.
    server.kill();
    let before = TestStore::Embedded(standby.clone()).with_db(|db| db.epoch().unwrap());
    let out = ok(cli(&["admin".into(), "new-epoch".into(), "--data-dir".into(), standby.display().to_string()]));
    let after = TestStore::Embedded(standby.clone()).with_db(|db| db.epoch().unwrap());
    assert_ne!(before, after);
    assert!(out.contains(&format!("{after:016x}")), "{out}");
    let _server = ServerProcess::spawn_at(Path::new(BIN), &TestStore::Embedded(standby), addr);
    let phones = sync_all(sync_all(phones, &url).await, &url).await;
    let on_server = fleet::server_records(&url, &layout).await;
    let verdict = fleet::check(&on_server, &phones, true);
    assert!(verdict.is_exact(), "{verdict:?}");
    assert_eq!(on_server.len(), 20);
}

