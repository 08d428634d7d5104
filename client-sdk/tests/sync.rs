//! The sync loop against the in-process fake server of `common/`.

mod common;

use std::path::Path;
use std::sync::Arc;

use client_sdk::{Client, Error, FixedKey, RecordId, RecordKind, StoreKey, SyncReport, SyncStatus};
use common::{FakeServer, PASSWORD};
use serde_json::{json, Value};

const KEY: [u8; 32] = [7; 32];

fn phone(dir: &Path, server: &Arc<FakeServer>) -> Client {
    Client::open(dir, FixedKey(StoreKey::from_bytes(KEY)))
        .unwrap()
        .with_transport(server.clone())
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn login(c: &mut Client) {
    block(c.login("https://fake.example", "officer", PASSWORD, None)).unwrap();
}

fn sync(c: &mut Client) -> SyncReport {
    block(c.sync(|_| {})).unwrap()
}

fn case(commune: &str) -> Value {
    json!({"commune": commune, "detected_on": "2025-03-01", "victim": {"sex": "female"}, "notes": "n"})
}

/// The record as both sides should see it, without the phone-local sync status.
fn content(c: &Client, id: RecordId) -> Value {
    let mut v = c.show(id).unwrap();
    v.as_object_mut().unwrap().remove("sync_status");
    v
}

#[test]
fn records_go_up_from_one_phone_and_down_to_another() {
    let server = Arc::new(FakeServer::new());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = phone(da.path(), &server);
    let ids: Vec<RecordId> = (0..3)
        .map(|_| a.create(RecordKind::GbvCase, &case("04712")).unwrap())
        .collect();
    a.append(
        ids[0],
        "services",
        &json!({"kind": "health", "provider": "TYT"}),
    )
    .unwrap();
    assert_eq!(a.pending_count(), 3);
    login(&mut a);
    let r = sync(&mut a);
    assert_eq!((r.pushed, r.rejected, r.conflicts), (3, 0, 0));
    assert_eq!(a.pending_count(), 0);
    assert_eq!(a.status(ids[0]).unwrap(), SyncStatus::Synced);
    assert_eq!(server.record_count(), 3);

    // A second sync with nothing new is one small request.
    let calls = server.with(|s| s.sync_calls);
    let r = sync(&mut a);
    assert_eq!((r.pushed, r.pulled), (0, 0));
    assert_eq!(server.with(|s| s.sync_calls), calls + 1);

    let mut b = phone(db.path(), &server);
    login(&mut b);
    let r = sync(&mut b);
    assert_eq!((r.pushed, r.pulled), (0, 3));
    for id in &ids {
        assert_eq!(content(&a, *id), content(&b, *id));
        assert_eq!(b.status(*id).unwrap(), SyncStatus::Synced);
    }
    assert_eq!(
        server.view(ids[0]).unwrap()["services"][0]["provider"],
        "TYT"
    );
}

#[test]
fn concurrent_edits_become_conflicts_on_both_phones() {
    let server = Arc::new(FakeServer::new());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, mut b) = (phone(da.path(), &server), phone(db.path(), &server));
    login(&mut a);
    login(&mut b);
    let id = a.create(RecordKind::GbvCase, &case("04712")).unwrap();
    sync(&mut a);
    sync(&mut b);
    a.set(id, "victim.sex", &json!("male")).unwrap();
    b.set(id, "victim.sex", &json!("other")).unwrap();
    b.append(id, "services", &json!({"kind": "legal_aid"}))
        .unwrap();
    assert_eq!(sync(&mut a).pushed, 1);
    let r = sync(&mut b);
    assert_eq!((r.pushed, r.pulled, r.conflicts), (1, 1, 1));
    // B merged A's change locally after pushing its own: it is pending until the next sync.
    let r = sync(&mut a);
    assert_eq!((r.pulled, r.conflicts), (1, 1));
    let shown = a.show(id).unwrap();
    let conflicts = shown["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0]["path"], "victim.sex");
    let mut values: Vec<String> = conflicts[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    values.sort();
    assert_eq!(values, ["male", "other"]);
    sync(&mut b);
    assert_eq!(content(&a, id), content(&b, id));
    assert_eq!(a.pending_count() + b.pending_count(), 0);
    // Setting the field again resolves the conflict.
    a.set(id, "victim.sex", &json!("female")).unwrap();
    assert!(a.show(id).unwrap().get("conflicts").is_none());
    assert_eq!(sync(&mut a).conflicts, 0);
}

#[test]
fn a_rejected_record_stays_local_and_is_pushed_again_only_after_an_edit() {
    let server = Arc::new(FakeServer::new());
    server.with(|s| s.reject_commune = Some("04999".into()));
    let d = tempfile::tempdir().unwrap();
    let mut a = phone(d.path(), &server);
    login(&mut a);
    let bad = a.create(RecordKind::GbvCase, &case("04999")).unwrap();
    let good = a
        .create(
            RecordKind::NewsItem,
            &json!({"commune": "04712", "published_on": "2025-02-01"}),
        )
        .unwrap();
    let r = sync(&mut a);
    assert_eq!((r.pushed, r.rejected), (1, 1));
    match a.status(bad).unwrap() {
        SyncStatus::Rejected { reason } => {
            assert!(reason.contains("outside your org unit"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        a.show(bad).unwrap()["sync_error"],
        "commune 04999 is outside your org unit"
    );
    assert_eq!(a.status(good).unwrap(), SyncStatus::Synced);
    assert_eq!(a.pending_count(), 0);

    let r = sync(&mut a);
    assert_eq!(
        (r.pushed, r.rejected),
        (0, 0),
        "a rejected record is not re-sent unchanged"
    );
    assert!(server.with(|s| s.requests.last().unwrap().push.is_empty()));

    a.set(bad, "status", &json!("closed")).unwrap();
    assert_eq!(a.status(bad).unwrap(), SyncStatus::Pending);
    server.with(|s| s.reject_commune = None);
    let r = sync(&mut a);
    assert_eq!((r.pushed, r.rejected), (1, 0));
    assert_eq!(a.status(bad).unwrap(), SyncStatus::Synced);
    assert_eq!(server.view(bad).unwrap()["status"], "closed");
}

#[test]
fn need_full_makes_the_phone_push_the_whole_document() {
    let server = Arc::new(FakeServer::new());
    let d = tempfile::tempdir().unwrap();
    let mut a = phone(d.path(), &server);
    login(&mut a);
    let id = a.create(RecordKind::GbvCase, &case("04712")).unwrap();
    sync(&mut a);
    server.forget(id); // e.g. the server was restored from an older backup
    a.set(id, "perpetrator.counselled", &json!(true)).unwrap();
    let before = server.with(|s| s.requests.len());
    let r = sync(&mut a);
    assert_eq!(r.pushed, 1);
    let requests = server.with(|s| s.requests[before..].to_vec());
    assert!(requests.len() >= 2);
    let (first, second) = (&requests[0].push[0], &requests[1].push[0]);
    assert!(
        second.changes.len() > first.changes.len(),
        "the second push is the whole document"
    );
    assert_eq!(server.view(id).unwrap(), {
        let mut v = content(&a, id);
        v.as_object_mut().unwrap().remove("id");
        v
    });
    assert_eq!(a.status(id).unwrap(), SyncStatus::Synced);
}

#[test]
fn a_phone_missing_history_asks_for_the_whole_document() {
    let server = Arc::new(FakeServer::new());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = phone(da.path(), &server);
    login(&mut a);
    let id = a.create(RecordKind::GbvCase, &case("04712")).unwrap();
    sync(&mut a);
    a.set(id, "status", &json!("closed")).unwrap();
    sync(&mut a);
    // The feed now carries only the second version's changes: B cannot apply them alone.
    let mut b = phone(db.path(), &server);
    login(&mut b);
    let r = sync(&mut b);
    assert_eq!(r.pulled, 1);
    let requests = server.with(|s| s.requests.clone());
    assert!(
        requests.iter().any(|r| r.want_full == vec![id]),
        "B asked for the whole record"
    );
    assert_eq!(content(&a, id), content(&b, id));
    assert_eq!(b.status(id).unwrap(), SyncStatus::Synced);
}

#[test]
fn pulls_are_paged_and_an_interrupted_sync_resumes() {
    let server = Arc::new(FakeServer::new());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = phone(da.path(), &server);
    login(&mut a);
    let ids: Vec<RecordId> = (0..7)
        .map(|_| a.create(RecordKind::GbvCase, &case("04712")).unwrap())
        .collect();
    sync(&mut a);
    server.with(|s| {
        s.page = 2;
        s.fail_after = Some(s.sync_calls + 2);
    });
    {
        let mut b = phone(db.path(), &server);
        login(&mut b);
        let err = block(b.sync(|_| {})).unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err}");
        assert_eq!(b.ids(None).len(), 4, "two pages were applied and kept");
    }
    server.with(|s| s.fail_after = None);
    // A fresh process: everything comes from disk.
    let mut b = phone(db.path(), &server);
    let mut rounds = Vec::new();
    let r = block(b.sync(|p| rounds.push(p.clone()))).unwrap();
    assert_eq!(r.pulled, 3);
    assert_eq!(rounds.len(), 2);
    assert!(rounds[0].more && !rounds[1].more);
    assert_eq!(b.ids(None), {
        let mut v = ids.clone();
        v.sort();
        v
    });
}

#[test]
fn pushes_are_paged_to_fit_the_message_limit() {
    use rand::{distributions::Alphanumeric, Rng, SeedableRng};
    let server = Arc::new(FakeServer::new());
    let d = tempfile::tempdir().unwrap();
    let mut a = phone(d.path(), &server);
    login(&mut a);
    let seed = 20250301;
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Incompressible 8 KiB notes: 520 records are more than one 4 MiB page.
    for _ in 0..520 {
        let notes: String = (&mut rng)
            .sample_iter(&Alphanumeric)
            .take(8000)
            .map(char::from)
            .collect();
        let mut rec = case("04712");
        rec["notes"] = json!(notes);
        a.create(RecordKind::GbvCase, &rec).unwrap();
    }
    let r = sync(&mut a);
    assert_eq!(r.pushed, 520);
    let (calls, largest) = server.with(|s| (s.requests.len(), s.largest_body));
    assert!(calls >= 2, "{calls} requests");
    assert!(largest <= client_sdk::PUSH_BUDGET + 4096, "{largest}");
}

#[test]
fn an_expired_access_token_is_refreshed_once_and_the_new_refresh_token_kept() {
    let server = Arc::new(FakeServer::new());
    let d = tempfile::tempdir().unwrap();
    let mut a = phone(d.path(), &server);
    login(&mut a);
    a.create(RecordKind::GbvCase, &case("04712")).unwrap();
    server.with(|s| s.expire_next = true);
    assert_eq!(sync(&mut a).pushed, 1);
    // The rotated refresh token was stored: a second expiry, after reopening, still works.
    drop(a);
    let mut a = phone(d.path(), &server);
    a.create(RecordKind::GbvCase, &case("04712")).unwrap();
    server.with(|s| s.expire_next = true);
    assert_eq!(sync(&mut a).pushed, 1);

    server.with(|s| {
        s.expire_next = true;
        s.refresh_broken = true;
    });
    let err = block(a.sync(|_| {})).unwrap_err();
    assert!(matches!(err, Error::SessionExpired));
    assert_eq!(
        err.to_string(),
        "session expired: run `gesync-field login` again"
    );
    let err = block(a.sync(|_| {})).unwrap_err();
    assert!(matches!(err, Error::SessionExpired), "{err}");
}

#[test]
fn sync_before_login_says_so_and_bad_passwords_are_refused() {
    let server = Arc::new(FakeServer::new());
    let d = tempfile::tempdir().unwrap();
    let mut a = phone(d.path(), &server);
    let err = block(a.sync(|_| {})).unwrap_err();
    assert!(matches!(err, Error::NotLoggedIn), "{err}");
    let err = block(a.login("https://fake.example", "officer", "nope", None)).unwrap_err();
    assert_eq!(err.to_string(), "login refused: wrong username or password");
}

#[test]
fn a_revoked_device_wipes_its_store() {
    let server = Arc::new(FakeServer::new());
    let d = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let mut a = Client::open(d.path(), client_sdk::KeyFile::new(keys.path()))
        .unwrap()
        .with_transport(server.clone());
    login(&mut a);
    let id = a.create(RecordKind::GbvCase, &case("04712")).unwrap();
    // Something the officer put there later is not the store's to delete.
    std::fs::write(d.path().join("mine.txt"), "x").unwrap();
    server.with(|s| s.revoked = true);
    let err = block(a.sync(|_| {})).unwrap_err();
    assert!(matches!(err, Error::DeviceRevoked));
    assert_eq!(
        err.to_string(),
        "this device was revoked by an administrator: the local data was wiped"
    );
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["mine.txt"], "every store file is gone");
    assert_eq!(
        std::fs::read_dir(keys.path()).unwrap().count(),
        0,
        "the key is gone"
    );
    assert!(matches!(a.show(id), Err(Error::DeviceRevoked)));
}

#[test]
fn many_phones_sync_concurrently_in_one_runtime() {
    let server = Arc::new(FakeServer::new());
    let root = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let dir = root.path().join(format!("phone-{i}"));
            let server = server.clone();
            rt.spawn(async move {
                let mut c = phone(&dir, &server);
                c.login("https://fake.example", "officer", PASSWORD, None)
                    .await
                    .unwrap();
                c.create(
                    RecordKind::NewsItem,
                    &json!({"commune": "04712", "published_on": "2025-02-01"}),
                )
                .unwrap();
                c.sync(|_| {}).await.unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(rt.block_on(h).unwrap().pushed, 1);
    }
    assert_eq!(server.record_count(), 20);
}

/// The bytes of every record file of a store.
fn record_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("records"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn verdicts_are_journalled_once_per_round_and_survive_reopening() {
    let server = Arc::new(FakeServer::new());
    server.with(|s| s.reject_commune = Some("04999".into()));
    let d = tempfile::tempdir().unwrap();
    let (good, bad) = {
        let mut a = phone(d.path(), &server);
        login(&mut a);
        let good: Vec<RecordId> = (0..3)
            .map(|_| a.create(RecordKind::GbvCase, &case("04712")).unwrap())
            .collect();
        let bad = a.create(RecordKind::GbvCase, &case("04999")).unwrap();
        let before = record_files(d.path());
        let r = sync(&mut a);
        assert_eq!((r.pushed, r.rejected), (3, 1));
        // The verdicts went to the journal: no record file was rewritten for them.
        assert_eq!(record_files(d.path()), before);
        assert!(d.path().join("acks").exists());
        (good, bad)
    };
    let mut a = phone(d.path(), &server);
    for id in &good {
        assert_eq!(a.status(*id).unwrap(), SyncStatus::Synced);
    }
    assert!(matches!(a.status(bad).unwrap(), SyncStatus::Rejected { .. }));
    assert_eq!(a.pending_count(), 0);
    let r = sync(&mut a);
    assert_eq!((r.pushed, r.rejected), (0, 0), "nothing is pushed again after reopening");
}

#[test]
fn a_lost_or_older_journal_only_makes_records_pending_again() {
    let server = Arc::new(FakeServer::new());
    let d = tempfile::tempdir().unwrap();
    let mut a = phone(d.path(), &server);
    login(&mut a);
    let id = a.create(RecordKind::GbvCase, &case("04712")).unwrap();
    sync(&mut a);
    let older = std::fs::read(d.path().join("acks")).unwrap();
    a.set(id, "status", &json!("closed")).unwrap();
    sync(&mut a);
    assert_eq!(a.status(id).unwrap(), SyncStatus::Synced);
    drop(a);

    // As if the crash came before the last journal write reached the disk: the verdict read
    // back is an older one. The record is pending, pushed again, and the server keeps one copy.
    std::fs::write(d.path().join("acks"), older).unwrap();
    let mut a = phone(d.path(), &server);
    assert_eq!(a.status(id).unwrap(), SyncStatus::Pending);
    assert_eq!(a.show(id).unwrap()["status"], "closed");
    let r = sync(&mut a);
    assert_eq!((r.pushed, r.rejected), (1, 0));
    assert_eq!(a.status(id).unwrap(), SyncStatus::Synced);
    assert_eq!(server.record_count(), 1);
    assert_eq!(server.view(id).unwrap()["status"], "closed");
    drop(a);

    // No journal at all: the same.
    std::fs::remove_file(d.path().join("acks")).unwrap();
    let mut a = phone(d.path(), &server);
    assert_eq!(a.pending_count(), 1);
    sync(&mut a);
    assert_eq!(a.pending_count(), 0);
    assert_eq!(server.record_count(), 1);
}
