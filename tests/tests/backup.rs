//! Backups of a running, loaded server (`gesync-server backup` asks the server over its admin
//! socket, because sled locks the store), restores into a fresh directory, and a damaged store
//! refused at start with a message pointing at `restore`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use client_sdk::SyncStatus;
use serde_json::Value;
use tests::fleet::{self, FleetConfig, Layout, Phone, TimedTransport};
use tests::{seed_from_env, ServerProcess};

const BIN: &str = env!("CARGO_BIN_EXE_gesync-server-under-test");

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("GESYNC_LOG", "warn").output().unwrap()
}

/// (record id → view) of every record a phone created and holds as synced, with the instant the
/// phone learnt it was acknowledged.
type Acks = Arc<Mutex<Vec<(Instant, String, Value)>>>;

/// A phone that keeps creating a record and syncing until told to stop, noting each record the
/// server acknowledged (records are not edited here, so an acknowledged view is final).
async fn keep_syncing(mut p: Phone, stop: Arc<AtomicBool>, acks: Acks) -> (Phone, fleet::PhaseStats) {
    let mut stats = fleet::PhaseStats::default();
    while !stop.load(Ordering::Relaxed) {
        let (q, _) = fleet::create(p, 1).await;
        let (q, s) = fleet::sync(q, false).await;
        p = q;
        stats.merge(s);
        let now = Instant::now();
        let mut acks = acks.lock().unwrap();
        for id in &p.created {
            if p.client.status(*id).unwrap() == SyncStatus::Synced && !acks.iter().any(|(_, i, _)| *i == id.to_string()) {
                acks.push((now, id.to_string(), fleet::comparable(p.client.show(*id).unwrap())));
            }
        }
    }
    (p, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_during_load_restores_every_acknowledged_change_with_equal_figures() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let mut config = FleetConfig::new(6, 0);
    config.phones_per_commune = 2;
    let layout = Layout::new(config);
    {
        let db = gesync_server::open_db(&data).unwrap();
        layout.seed(&db);
    }
    let server = ServerProcess::spawn(Path::new(BIN), &data);
    let url = server.url();
    let transport = TimedTransport::new(&url);
    let phones = fleet::phones(&layout, &dir.path().join("phones"), transport.clone());
    let u = url.clone();
    let (phones, s) = fleet::each(phones, move |p| fleet::login(p, u.clone())).await;
    assert_eq!(s.errors, 0);
    let (phones, _) = fleet::each(phones, |p| fleet::create(p, 10)).await;
    let (phones, _) = fleet::each(phones, |p| fleet::sync(p, false)).await;

    // The load: every phone creates and syncs in a loop while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    let (st, ac) = (stop.clone(), acks.clone());
    let load = tokio::spawn(fleet::each(phones, move |p| keep_syncing(p, st.clone(), ac.clone())));
    // Once the load is visibly running (some records acknowledged inside it), back up.
    while acks.lock().unwrap().len() < 6 * 10 + 6 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let backup = dir.path().join("during-load.gesync-backup");
    let began = Instant::now();
    let out = tokio::task::spawn_blocking({
        let (d, b) = (data.clone(), backup.clone());
        move || cli(&["backup", "--data-dir", d.to_str().unwrap(), "--out", b.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "backup while the server runs failed: {}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(answer["entries"].as_u64().unwrap() > 0, "{answer}");
    // Let the load go on a little after the backup, then stop it.
    let after = acks.lock().unwrap().len();
    while acks.lock().unwrap().len() < after + 6 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (_phones, s) = load.await.unwrap();
    assert_eq!(s.errors, 0, "syncs failed during the backup");
    let acked_before: BTreeMap<String, Value> = acks.lock().unwrap().iter().filter(|(t, _, _)| *t < began).map(|(_, i, v)| (i.clone(), v.clone())).collect();
    let acked_total = acks.lock().unwrap().len();
    assert!(acked_total > acked_before.len(), "no change was acknowledged after the backup began");

    // Restore into a fresh directory (the CLI), open it: every change acknowledged before the
    // backup began is there, exactly.
    let restored = dir.path().join("restored");
    let out = cli(&["restore", "--data-dir", restored.to_str().unwrap(), "--from", backup.to_str().unwrap()]);
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    let db = gesync_server::open_db(&restored).unwrap();
    for (id, view) in &acked_before {
        let got = db.records().record_view(&id.parse().unwrap()).unwrap().map(fleet::comparable);
        assert_eq!(got.as_ref(), Some(view), "record {id}, acknowledged before the backup began, is not in it as acknowledged");
    }
    let in_backup: usize = layout.communes.iter().map(|(c, _)| db.records().record_ids_of(c).unwrap().len()).sum();
    eprintln!("backup: {} entries, {in_backup} records; {} acknowledged before it began, {acked_total} in all", answer["entries"], acked_before.len());

    // Its figures are those of its records: the counters it carries equal a recomputation from
    // its documents, at every level (a backup never has a record without its counters).
    let units: Vec<String> = std::iter::once(fleet::PROVINCE.to_string()).chain(layout.districts.iter().cloned()).chain(layout.communes.iter().map(|c| c.0.clone())).collect();
    let figures = |db: &gesync_server::Db| {
        let per_unit: Vec<String> = units.iter().map(|u| format!("{:?}", db.figures().indicators(u, "2025".parse().unwrap()).unwrap())).collect();
        (db.figures().all_counters().unwrap(), per_unit)
    };
    let carried = figures(&db);
    db.rebuild_figures().unwrap();
    assert_eq!(figures(&db), carried, "the restored counters differ from the restored records' figures");
    drop(db);

    // A backup taken of the quiet server equals the original store's figures exactly.
    let full = dir.path().join("quiet.gesync-backup");
    let out = cli(&["backup", "--data-dir", data.to_str().unwrap(), "--out", full.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server.kill();
    let restored_full = dir.path().join("restored-full");
    assert!(cli(&["restore", "--data-dir", restored_full.to_str().unwrap(), "--from", full.to_str().unwrap()]).status.success());
    let original = gesync_server::open_db(&data).unwrap();
    let copy = gesync_server::open_db(&restored_full).unwrap();
    assert_eq!(figures(&copy), figures(&original));
    let count = |db: &gesync_server::Db| layout.communes.iter().map(|(c, _)| db.records().record_ids_of(c).unwrap().len()).sum::<usize>();
    assert_eq!(count(&copy), count(&original));
    assert!(count(&original) >= acked_total);
}

/// Overwrites `len` bytes of `file` at `at` with a pattern (a damaged sector).
fn damage(file: &Path, at: u64, len: usize) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&vec![0xA5; len]).unwrap();
    f.sync_all().unwrap();
}

/// A store with some records, written by a server that then stopped cleanly.
async fn store_with_records(dir: &Path) -> Layout {
    let mut config = FleetConfig::new(2, 0);
    config.phones_per_commune = 2;
    let layout = Layout::new(config);
    let data = dir.join("server");
    {
        let db = gesync_server::open_db(&data).unwrap();
        layout.seed(&db);
    }
    let server = ServerProcess::spawn(Path::new(BIN), &data);
    let transport = TimedTransport::new(&server.url());
    let phones = fleet::phones(&layout, &dir.join("phones"), transport);
    let u = server.url();
    let (phones, _) = fleet::each(phones, move |p| fleet::login(p, u.clone())).await;
    let (phones, _) = fleet::each(phones, |p| fleet::create(p, 40)).await;
    let (_, s) = fleet::each(phones, |p| fleet::sync(p, false)).await;
    assert_eq!(s.errors, 0);
    let _ = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status();
    let mut server = server;
    assert!(server.child.wait().unwrap().success());
    layout
}

/// `serve` on `data` must refuse with exit code 1 and one stderr line naming `restore`.
fn assert_refused(data: &Path, what: &str) {
    let err = gesync_server::open_db(data).err().unwrap_or_else(|| panic!("{what}: open_db accepted a damaged store"));
    assert!(err.contains("restore"), "{what}: {err}");
    let out = cli(&["serve", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0", "--plain-http"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: serve did not refuse: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: expected one stderr line, got {stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains("gesync-server restore"), "{what}: {}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_refused_at_start_with_a_pointer_to_restore() {
    let seed = seed_from_env("a_damaged_store_is_refused_at_start_with_a_pointer_to_restore");
    let dir = tempfile::tempdir().unwrap();
    store_with_records(dir.path()).await;
    let data = dir.path().join("server");

    // 1. sled's config file damaged.
    let broken = dir.path().join("conf-damaged");
    tests::copy_dir(&data, &broken);
    damage(&broken.join("conf"), 0, 8);
    assert_refused(&broken, "damaged conf");

    // 2. The log truncated to its first bytes (a lost file tail, a bad copy).
    let broken = dir.path().join("db-truncated");
    tests::copy_dir(&data, &broken);
    let f = std::fs::OpenOptions::new().write(true).open(broken.join("db")).unwrap();
    f.set_len(100).unwrap();
    assert_refused(&broken, "truncated db");

    // Not checked here: bytes overwritten *inside* the log. sled did not detect a 4 KiB
    // overwrite at a random offset at open (docs/reliability.md, "Limits"), so such damage is
    // not refused at start today.
    let _ = seed;
}


fn cli_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BIN).args(args).env("GESYNC_LOG", "warn").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_backup_restores_with_its_passphrase_and_a_new_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    {
        let db = gesync_server::open_db(&data).unwrap();
        tests::seed(&db, 0);
    }
    // A session from before the backup.
    let server = ServerProcess::spawn(Path::new(BIN), &data);
    let before = tests::Api::login(&server.url(), "district").await;
    server.kill();
    let out = dir.path().join("backup.sealed");
    let passphrase = "một cụm mật khẩu dài cho bản sao lưu\n";
    let r = cli_with_stdin(&["backup", "--data-dir", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--passphrase-stdin"], passphrase);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let sealed = std::fs::read(&out).unwrap();
    assert!(!sealed.windows(8).any(|w| w == b"district"), "the backup is not readable without the passphrase");
    assert!(!dir.path().join("backup.plain-partial").exists(), "no plain copy is left behind");
    // Without it, or with a wrong one: refused with one line.
    let restored = dir.path().join("restored");
    let r = cli(&["restore", "--data-dir", restored.to_str().unwrap(), "--from", out.to_str().unwrap()]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("passphrase"));
    let r = cli_with_stdin(&["restore", "--data-dir", restored.to_str().unwrap(), "--from", out.to_str().unwrap(), "--passphrase-stdin"], "a wrong passphrase of length\n");
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("wrong passphrase"), "{}", String::from_utf8_lossy(&r.stderr));
    let r = cli_with_stdin(&["restore", "--data-dir", restored.to_str().unwrap(), "--from", out.to_str().unwrap(), "--passphrase-stdin"], passphrase);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // The restored server signs with a new key: the old access token is refused; a new login works.
    let server = ServerProcess::spawn(Path::new(BIN), &restored);
    let (status, _) = tests::Api::login(&server.url(), "district").await.with_token(&before.token).get("/api/v1/me").await;
    assert_eq!(status, 401, "an access token signed before the restore");
    server.kill();
}

/// The upgrade path: a backup of the embedded store restores into an empty PostgreSQL database,
/// which then serves the same records and figures (and refuses a second restore).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_backup_restores_into_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let layout = store_with_records(dir.path()).await;
    let data = dir.path().join("server");
    let sled = tests::TestStore::Embedded(data.clone());
    let server = ServerProcess::spawn(Path::new(BIN), &data);
    let on_sled = fleet::server_records(&server.url(), &layout).await;
    server.kill();
    assert_eq!(on_sled.len(), 2 * 40);
    let counters = sled.with_db(|db| db.figures().all_counters().unwrap());

    let file = dir.path().join("sled.gsb");
    let out = cli(&["backup", "--data-dir", data.to_str().unwrap(), "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pg = tests::TestStore::postgres();
    let url = match &pg {
        tests::TestStore::Postgres(u) => u.clone(),
        _ => unreachable!(),
    };
    let out = cli(&["restore", "--database", &url, "--from", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (pg_counters, chain) = pg.with_db(|db| (db.figures().all_counters().unwrap(), db.audit_log().verify_audit_chain().unwrap()));
    assert_eq!(pg_counters, counters, "the same figures");
    assert!(chain.is_ok(), "the audit chain came along intact: {chain:?}");
    let server = ServerProcess::spawn_on(Path::new(BIN), &pg);
    let on_pg = fleet::server_records(&server.url(), &layout).await;
    assert_eq!(on_pg, on_sled, "the same records");
    server.kill();

    // A database that holds data already is refused, in one line, without the password.
    let out = cli(&["restore", "--database", &url, "--from", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("already holds data"), "{stderr}");
    let password = url.split_once("://").and_then(|(_, r)| r.split_once('@')).and_then(|(u, _)| u.split_once(':')).map(|(_, p)| p.to_string()).unwrap();
    assert!(!stderr.contains(&password), "the password leaked: {stderr}");
}

/// Issue "Nothing lost", item 3: 4 KiB overwritten at several places in the store's files.
/// `check` must find every overwrite that hit live data (a record refused, missing or
/// different), and no read ever returns altered content: a record is either as it was or
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_bytes_are_found_by_check_and_never_served() {
    use rand::{Rng, SeedableRng};
    let seed = seed_from_env("overwritten_bytes_are_found_by_check_and_never_served");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let layout = store_with_records(dir.path()).await;
    let data = dir.path().join("server");
    let out = cli(&["check", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "a sound store: {}", String::from_utf8_lossy(&out.stderr));
    let (ids, expected) = {
        let db = gesync_server::open_db(&data).unwrap();
        let ids: Vec<_> = layout.communes.iter().flat_map(|(c, _)| db.records().record_ids_of(c).unwrap()).collect();
        let views: Vec<_> = ids.iter().map(|id| db.records().record_view(id).unwrap().expect("a stored record")).collect();
        (ids, views)
    };
    assert!(!ids.is_empty());
    // Inconsistencies no checksum shows: a record's feed entry gone, a counter changed.
    let edited = dir.path().join("edited");
    tests::copy_dir(&data, &edited);
    {
        let db = gesync_server::open_db(&edited).unwrap();
        let mut b = gesync_server::store::Batch::default();
        let (feed_key, _) = db.kv().range(b"f/", b"f0", 1).unwrap().remove(0);
        b.delete(feed_key);
        let (counter_key, _) = db.kv().range(b"c/", b"c0", 1).unwrap().remove(0);
        b.put(counter_key, br#"{"news_items":999}"#.to_vec());
        db.commit(b).unwrap();
    }
    let out = cli(&["check", "--data-dir", edited.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not in the feed") && stderr.contains("stored figures differ"), "{stderr}");
    let size = std::fs::metadata(data.join("db")).unwrap().len();
    let mut hit = 0;
    for round in 0..8 {
        let broken = dir.path().join(format!("damaged-{round}"));
        tests::copy_dir(&data, &broken);
        let at = rng.gen_range(0..size.saturating_sub(4096).max(1));
        damage(&broken.join("db"), at, 4096);
        let check = cli(&["check", "--data-dir", broken.to_str().unwrap()]);
        let (mut same, mut refused, mut missing) = (0, 0, 0);
        match gesync_server::open_db(&broken) {
            Err(_) => refused = ids.len(),
            Ok(db) => {
                for (id, want) in ids.iter().zip(&expected) {
                    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.records().record_view(id)));
                    match got {
                        Ok(Ok(Some(v))) => {
                            assert_eq!(&v, want, "offset {at}: record {id} served altered (seed {seed})");
                            same += 1;
                        }
                        Ok(Ok(None)) => missing += 1,
                        Ok(Err(_)) | Err(_) => refused += 1,
                    }
                }
            }
        }
        let stderr = String::from_utf8_lossy(&check.stderr);
        eprintln!("offset {at} of {size}: {same} as they were, {refused} refused, {missing} missing; check: {} {}", check.status, stderr.lines().next().unwrap_or(""));
        if refused + missing > 0 {
            hit += 1;
            assert!(!check.status.success(), "offset {at}: records damaged and check passed (seed {seed})");
        }
    }
    eprintln!("{hit} of 8 overwrites hit live data (seed {seed})");
}

/// Issue "Nothing lost", item 3: a record's stored bytes altered in place (a bad sector under a
/// database, a torn copy, an edit by hand) must be found by its checksum: `check` names it, a
/// read refuses it, a phone's pull leaves it out and gets the rest, and nothing altered is
/// ever served. On the embedded store and on PostgreSQL.
async fn a_record_damaged_in_place_is_named_refused_and_never_served(store: tests::TestStore, dir: &Path) {
    let mut config = FleetConfig::new(2, 0);
    config.phones_per_commune = 2;
    let layout = Layout::new(config);
    {
        let layout = layout.clone();
        store.with_db(move |db| layout.seed(db));
    }
    let server = ServerProcess::spawn_on(Path::new(BIN), &store);
    let u = server.url();
    let phones = fleet::phones(&layout, &dir.join("phones"), TimedTransport::new(&u));
    let (phones, _) = fleet::each(phones, move |p| fleet::login(p, u.clone())).await;
    let (phones, _) = fleet::each(phones, |p| fleet::create(p, 10)).await;
    let (_, s) = fleet::each(phones, |p| fleet::sync(p, false)).await;
    assert_eq!(s.errors, 0);
    server.kill();
    let communes: Vec<String> = layout.communes.iter().map(|(c, _)| c.clone()).collect();
    // Two records damaged: one's document, the other's metadata, one byte each, mid-value.
    let (expected, damaged) = store.with_db(move |db| {
        let ids: Vec<_> = communes.iter().flat_map(|c| db.records().record_ids_of(c).unwrap()).collect();
        let expected: BTreeMap<String, Value> = ids.iter().map(|id| (id.to_string(), fleet::comparable(db.records().record_view(id).unwrap().unwrap()))).collect();
        let mut b = gesync_server::store::Batch::default();
        for (id, prefix) in ids.iter().take(2).zip([b"r/", b"m/"]) {
            let k = [prefix.as_slice(), &id.0].concat();
            let mut v = db.kv().get(&k).unwrap().expect("stored");
            let mid = v.len() / 2;
            v[mid] ^= 0x20;
            b.put(k, v);
        }
        db.commit(b).unwrap();
        (expected, ids[..2].iter().map(|id| id.to_string()).collect::<Vec<_>>())
    });
    let mut args = vec!["check".to_string()];
    args.extend(store.args());
    let out = Command::new(BIN).args(&args).env("GESYNC_LOG", "warn").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for id in &damaged {
        assert!(stderr.contains(&format!("record {id}")) && stderr.contains("checksum"), "check did not name {id}: {stderr}");
    }
    // Served again: a new phone of each commune gets every record but the damaged ones, each as
    // it was; the damaged ones are refused when asked for.
    let server = ServerProcess::spawn_on(Path::new(BIN), &store);
    let u = server.url();
    // The server's own full check, run after start, says it through /healthz.
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let health = reqwest::get(format!("{u}/healthz")).await.unwrap().text().await.unwrap();
        if health.contains("store check: 2 problem(s)") {
            break;
        }
        assert!(Instant::now() < deadline, "/healthz never told of the damage: {health}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let phones = fleet::phones(&layout, &dir.join("new-phones"), TimedTransport::new(&u));
    let (phones, _) = fleet::each(phones, move |p| fleet::login(p, u.clone())).await;
    let (phones, s) = fleet::each(phones, |p| fleet::sync(p, false)).await;
    assert_eq!(s.errors, 0, "a pull past a damaged record");
    let mut received = BTreeMap::new();
    for p in &phones {
        for v in p.client.list(None).unwrap() {
            received.insert(v["id"].as_str().unwrap().to_string(), fleet::comparable(v));
        }
    }
    for (id, v) in &received {
        assert!(!damaged.contains(id), "damaged record {id} was served");
        assert_eq!(Some(v), expected.get(id), "record {id} served altered");
    }
    assert_eq!(received.len(), expected.len() - 2, "every sound record reaches the phones");
    let district = tests::Api::login(&server.url(), &Layout::district_user(&layout.districts[0])).await;
    for id in &damaged {
        let (status, _) = district.get(&format!("/api/v1/records/{id}")).await;
        assert_eq!(status, 500, "record {id} read through the API");
    }
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_damaged_in_place_is_refused_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    a_record_damaged_in_place_is_named_refused_and_never_served(tests::TestStore::Embedded(dir.path().join("server")), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_damaged_in_place_is_refused_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    a_record_damaged_in_place_is_named_refused_and_never_served(tests::TestStore::postgres(), dir.path()).await;
}
