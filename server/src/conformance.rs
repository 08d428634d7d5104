//! The conformance suite every store runs: the memory store, sled on disk, and PostgreSQL, once
//! through one handle and once through two handles on the same database (two replicas).
//!
//! The key-value contract (`store::tests`) and then the invariants the data layer stands on,
//! under concurrent writers: phones pushing and editing from several threads, a reviewer
//! pulling while they do, audit entries and refresh-token rotations racing.
//! - the feed never skips: a reader that pulls while others write ends with every record at
//!   its stored version;
//! - the counters are exact: they equal a rebuild from the documents, also after rebuilds that
//!   ran in pages beside the writers, and a rebuild mends a counter that drifted;
//! - the audit chain is one linear, verifiable chain holding every entry;
//! - a refresh-token family has one live token, however many replicas exchange it at once.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use sync_protocol::automerge::{ActorId, AutoCommit};
use sync_protocol::wire::{PushDoc, PushOutcome, SyncRequest};
use sync_protocol::{doc, heads_from_wire, heads_to_wire, RecordId, RecordKind};

use crate::db::{AuditEvent, Db, DbError};
use crate::model::{OrgUnit, Principal, Role};
use crate::store::{Kv, MemKv, PgConfig, PgKv, SledKv};

const WRITERS: usize = 4;
const RECORDS_EACH: usize = 12;

fn officer(i: usize) -> Principal {
    let commune = if i.is_multiple_of(2) { "04701" } else { "04702" };
    Principal { username: format!("officer{i}"), role: Role::CommuneOfficer, org_unit: commune.into(), device_id: format!("phone{i}") }
}

fn reviewer() -> Principal {
    Principal { username: "reviewer".into(), role: Role::DistrictStaff, org_unit: "047".into(), device_id: "web".into() }
}

fn setup(db: &Db) {
    for (code, parent, level) in [("04", None, "province"), ("047", Some("04"), "district"), ("04701", Some("047"), "commune"), ("04702", Some("047"), "commune")] {
        db.org_units().put_org_unit(OrgUnit::new(code, code, parent.map(Into::into), level), None).unwrap();
    }
}

fn push(db: &Db, who: &Principal, id: RecordId, d: &mut AutoCommit, since: &[sync_protocol::automerge::ChangeHash]) {
    let req = SyncRequest { push: vec![PushDoc { id, changes: d.save_after(since), heads: heads_to_wire(&d.get_heads()) }], ..Default::default() };
    let resp = db.records().sync(who, &req).unwrap();
    assert_eq!(resp.results[0].outcome, PushOutcome::Accepted, "{:?}", resp.results);
}

/// Pulls from `cursor` to the end, keeping what it gets; returns the new cursor.
fn pull_all(db: &Db, who: &Principal, cursor: Vec<u8>, held: &mut HashMap<RecordId, AutoCommit>) -> Vec<u8> {
    let mut cursor = cursor;
    loop {
        let r = db.records().sync(who, &SyncRequest { cursor: cursor.clone(), ..Default::default() }).unwrap();
        for p in r.pull {
            let d = held.entry(p.id).or_default();
            d.load_incremental(&p.changes).unwrap();
            assert_eq!(d.get_heads(), heads_from_wire(&p.heads), "a pulled record arrives whole");
        }
        cursor = r.cursor;
        if !r.more {
            return cursor;
        }
    }
}

/// The data layer's invariants under concurrent writers, on the handles `dbs` of one store.
pub(crate) fn invariants(dbs: &[Db]) {
    let db = &dbs[0];
    setup(db);
    for d in dbs {
        // Every handle sees the tree another made: at once where it reads the stored version,
        // and in its cached tree within the watch interval.
        assert_eq!(d.current_tree().unwrap().communes_under("047"), ["04701", "04702"]);
        let deadline = std::time::Instant::now() + crate::db::TREE_WATCH * 4;
        while d.tree().communes_under("047").len() != 2 {
            assert!(std::time::Instant::now() < deadline, "the cached tree never caught up");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let (rotation_token, family) = db.refresh_tokens().issue_refresh("reviewer", "web", 0).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (held, rotated) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                let db = &dbs[i % dbs.len()];
                s.spawn(move || {
                    let who = officer(i);
                    let mut mine = Vec::new();
                    for n in 0..RECORDS_EACH {
                        let quarter_day = ["2025-01-10", "2025-04-10", "2025-07-10"][n % 3];
                        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": who.org_unit, "published_on": quarter_day, "title": format!("{n}")}), ActorId::random()).unwrap();
                        let id = RecordId::random();
                        push(db, &who, id, &mut d, &[]);
                        mine.push((id, d));
                        // Edit an earlier record: its date moves its counters between quarters.
                        if n % 3 == 2 {
                            let (id, d) = &mut mine[n / 2];
                            let before = d.get_heads();
                            doc::set_path(d, "published_on", &json!("2025-10-01")).unwrap();
                            push(db, &who, *id, d, &before);
                        }
                        db.audit_log().audit(AuditEvent { user: who.username.clone(), device_id: None, action: "test", target: format!("{n}") }).unwrap();
                    }
                })
            })
            .collect();
        // A reviewer pulls while the phones push, from the last handle.
        let puller = s.spawn(|| {
            let reader = dbs.last().unwrap();
            let mut held = HashMap::new();
            let mut cursor = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                cursor = pull_all(reader, &reviewer(), cursor, &mut held);
            }
            pull_all(reader, &reviewer(), cursor, &mut held);
            held
        });
        // A rebuild of the figures runs beside them again and again, in pages of 5 records (a
        // write transaction each): the writes go on between its pages.
        let rebuilder = s.spawn(|| {
            let db = &dbs[1 % dbs.len()];
            let mut rebuilds = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                db.rebuild_figures_paged(5).unwrap();
                rebuilds += 1;
            }
            rebuilds
        });
        // Replicas given the same refresh token at once (a phone retrying a lost answer): the
        // exchanges happen one after another, and one token of the family stays live.
        let rotations: Vec<_> = dbs.iter().cycle().take(4).map(|d| s.spawn(|| d.refresh_tokens().use_refresh(&rotation_token).unwrap())).collect();
        let rotated: Vec<bool> = rotations.into_iter().map(|h| h.join().unwrap().is_ok()).collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        assert!(rebuilder.join().unwrap() > 0, "a rebuild ran during the writes");
        (puller.join().unwrap(), rotated)
    });
    assert!(rotated[0] || rotated.iter().any(|ok| *ok), "{rotated:?}");
    assert_eq!(db.refresh_tokens().live_refresh_tokens(&family).unwrap(), 1, "one live token per family: {rotated:?}");

    // The reader that pulled during the writes holds every record at its stored version.
    let mut stored: BTreeMap<RecordId, Vec<sync_protocol::automerge::ChangeHash>> = BTreeMap::new();
    for c in ["04701", "04702"] {
        for id in db.records().record_ids_of(c).unwrap() {
            stored.insert(id, db.records().load_doc(&id).unwrap().unwrap().get_heads());
        }
    }
    assert_eq!(stored.len(), WRITERS * RECORDS_EACH);
    let mut held: BTreeMap<RecordId, Vec<sync_protocol::automerge::ChangeHash>> = held.into_iter().map(|(id, mut d)| (id, d.get_heads())).collect();
    assert_eq!(held.len(), stored.len(), "the pull skipped records");
    assert!(held.iter_mut().all(|(id, h)| stored[id] == *h), "a pulled record is behind its stored version");

    // The counters equal a rebuild from the documents, on every handle.
    let live = db.figures().all_counters().unwrap();
    let q4: indicators::Quarter = "2025Q4".parse::<indicators::Period>().unwrap().quarters()[0];
    assert_eq!(db.figures().counters("047", q4).unwrap().news_items(), (WRITERS * RECORDS_EACH / 3) as i64, "the edits moved their records to Q4");
    // Counters that drifted from their records (a bug, a hand edit, a damaged disk) are mended
    // by a rebuild: one doubled, one where nothing counts, one that does not read.
    let mut drifted = db.figures().counters("04701", q4).unwrap();
    drifted.add(&drifted.clone());
    db.figures().overwrite_counter_row("04701", q4, &serde_json::to_vec(&drifted).unwrap());
    let q1_2026: indicators::Quarter = "2026Q1".parse::<indicators::Period>().unwrap().quarters()[0];
    db.figures().overwrite_counter_row("04702", q1_2026, &serde_json::to_vec(&drifted).unwrap());
    let q1: indicators::Quarter = "2025Q1".parse::<indicators::Period>().unwrap().quarters()[0];
    db.figures().overwrite_counter_row("047", q1, b"{not json");
    assert!(db.figures().all_counters().is_err(), "a row that does not read");
    // And every contribution forgotten (as a changed formula looks): the rebuild's pages move
    // each record's back in, through the row that does not read.
    db.records().forget_contributions();
    dbs.last().unwrap().rebuild_figures().unwrap();
    assert_eq!(db.figures().all_counters().unwrap(), live, "mended by one rebuild");
    // A drift read before another rebuild took it out is not taken out twice.
    db.figures().overwrite_counter_row("04701", q4, &serde_json::to_vec(&drifted).unwrap());
    let (seen, stale) = db.counters_drift(&Default::default()).unwrap();
    assert_eq!(stale.len(), 1, "the row made to drift");
    dbs.last().unwrap().rebuild_figures().unwrap();
    assert!(!db.figures().take_out_drift(seen, stale).unwrap(), "a drift already taken out");
    for d in dbs {
        assert_eq!(d.figures().all_counters().unwrap(), live, "counters equal a rebuild");
        assert_eq!(d.figures().counters("047", q4).unwrap().news_items(), (WRITERS * RECORDS_EACH / 3) as i64, "no handle serves a stale cache");
    }
    // One chain, every entry.
    for d in dbs {
        assert_eq!(d.audit_log().verify_audit_chain().unwrap(), Ok((WRITERS * RECORDS_EACH) as u64));
    }
    assert_eq!(db.records().feed_seq().unwrap(), (WRITERS * RECORDS_EACH + WRITERS * RECORDS_EACH / 3) as u64, "one sequence number per write, none skipped");
}

/// A device revoke racing logins of that device, and a disable racing other changes to the
/// account, on `dbs` (handles on one store): the revoke and the disable always win (each
/// read-modify-write is one write transaction; issue "Nothing lost", item 2).
pub(crate) fn revokes_and_disables_win_their_races(dbs: &[Db]) {
    use crate::model::User;
    let db = &dbs[0];
    setup(db);
    let on = |i: usize| &dbs[i % dbs.len()];
    for round in 0..30 {
        let name = format!("racer{round}");
        let user = User { username: name.clone(), role: Role::CommuneOfficer, org_unit: "04701".into(), password_hash: "not-a-hash".into(), disabled: false, session_epoch: 0 };
        db.accounts().put_user(&user, true, None).unwrap();
        assert!(db.accounts().login_device(&name, "phone", 1, None).unwrap());
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            s.spawn(|| {
                start.wait();
                for t in 0..6i64 {
                    on(round).accounts().login_device(&name, "phone", 2 + t, None).unwrap();
                }
            });
            s.spawn(|| {
                start.wait();
                assert!(on(round + 1).accounts().revoke_device(&name, "phone", None).unwrap());
            });
            s.spawn(|| {
                start.wait();
                on(round + 1).accounts().update_user::<DbError>(&name, None, |u| {
                    u.disabled = true;
                    Ok(())
                }).unwrap();
            });
            s.spawn(|| {
                start.wait();
                for t in 0..6 {
                    let unit = if t % 2 == 0 { "04702" } else { "04701" };
                    on(round).accounts().update_user::<DbError>(&name, None, |u| {
                        u.org_unit = unit.into();
                        Ok(())
                    }).unwrap();
                }
            });
        });
        assert!(db.accounts().get_device(&name, "phone").unwrap().unwrap().revoked, "round {round}: a login undid a revoke");
        assert!(db.accounts().get_user(&name).unwrap().unwrap().disabled, "round {round}: a change to the account undid a disable");
        assert!(!db.accounts().login_device(&name, "phone", 99, None).unwrap(), "a revoked device logs in no more");
    }
}

/// The typed storage seams (records, figures, the audit chain, accounts, logins, uploads, the
/// store's own rows)
/// (`*_rows.rs`) over this store's keyspace:
/// written through `write`, read through `read` (the same handle, or another replica's).
fn rows_conform(write: &dyn Kv, read: &dyn Kv) {
    use crate::record_rows::conform::Keyspace;
    use crate::rows::MetaForm;
    // Record metadata in the finalized store's form: every other test writes the form a store
    // starts with (JSON), and reads go through the same code for both.
    crate::record_rows::conform::suite(&mut Keyspace { write, read, meta_form: MetaForm::Postcard });
    let mut keyspace = Keyspace { write, read, meta_form: MetaForm::Json };
    crate::figure_rows::conform::suite(&mut keyspace);
    crate::audit_rows::conform::suite(&mut keyspace);
    crate::account_rows::conform::suite(&mut keyspace);
    crate::login_rows::conform::suite(&mut keyspace);
    crate::upload_rows::conform::suite(&mut keyspace);
    crate::store_rows::conform::suite(&mut keyspace);
}

#[test]
fn the_memory_store_conforms() {
    let kv = MemKv::default();
    crate::store::tests::conformance(&kv);
    crate::store::tests::concurrent_transactions(&kv);
    let rows = MemKv::default();
    rows_conform(&rows, &rows);
    invariants(&[Db::open(Box::new(MemKv::default())).unwrap()]);
    revokes_and_disables_win_their_races(&[Db::open(Box::new(MemKv::default())).unwrap()]);
}

#[test]
fn sled_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let kv = SledKv::open(&dir.path().join("kv")).unwrap();
    crate::store::tests::conformance(&kv);
    crate::store::tests::concurrent_transactions(&kv);
    let rows = SledKv::open(&dir.path().join("rows")).unwrap();
    rows_conform(&rows, &rows);
    invariants(&[Db::open(Box::new(SledKv::open(&dir.path().join("db")).unwrap())).unwrap()]);
    revokes_and_disables_win_their_races(&[Db::open(Box::new(SledKv::open(&dir.path().join("races")).unwrap())).unwrap()]);
}

fn pg() -> PgKv {
    PgKv::open(&PgConfig::new(crate::store::pg::create_test_database(&crate::store::pg::test_admin_url()))).unwrap()
}

#[test]
fn postgres_conforms() {
    let kv = pg();
    crate::store::tests::conformance(&kv);
    crate::store::tests::concurrent_transactions(&kv);
    let rows = pg();
    rows_conform(&rows, &rows);
    invariants(&[Db::open(Box::new(pg())).unwrap()]);
}

/// Two handles on one database: two replicas in one process, each with its own pool and caches.
#[test]
fn two_postgres_handles_on_one_database_conform() {
    let url = crate::store::pg::create_test_database(&crate::store::pg::test_admin_url());
    let open = || PgKv::open(&PgConfig::new(url.clone())).unwrap();
    let (a, b) = (open(), open());
    crate::store::tests::concurrent_transactions_on(&[&a, &b]);
    // The records' rows written by one replica and read by the other.
    let url_rows = crate::store::pg::create_test_database(&crate::store::pg::test_admin_url());
    let (w, r) = (PgKv::open(&PgConfig::new(url_rows.clone())).unwrap(), PgKv::open(&PgConfig::new(url_rows)).unwrap());
    rows_conform(&w, &r);
    let url2 = crate::store::pg::create_test_database(&crate::store::pg::test_admin_url());
    let open2 = || Db::open(Box::new(PgKv::open(&PgConfig::new(url2.clone())).unwrap())).unwrap();
    invariants(&[open2(), open2()]);
    // Two replicas racing: each side of each race on either.
    let url3 = crate::store::pg::create_test_database(&crate::store::pg::test_admin_url());
    let open3 = || Db::open(Box::new(PgKv::open(&PgConfig::new(url3.clone())).unwrap())).unwrap();
    revokes_and_disables_win_their_races(&[open3(), open3()]);
}

#[test]
fn migrations_run_once_when_replicas_start_together() {
    let url = crate::store::pg::create_test_database(&crate::store::pg::test_admin_url());
    let kvs: Vec<PgKv> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|_| s.spawn(|| PgKv::open(&PgConfig::new(url.clone())).unwrap())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(kvs[0].is_empty().unwrap());
    let dbs: Vec<Db> = kvs.into_iter().map(|kv| Db::open(Box::new(kv)).unwrap()).collect();
    // The audit key and the other secrets are made once: every replica holds the same.
    let keys: Vec<Vec<u8>> = dbs.iter().map(|d| d.secret("probe", || uuid::Uuid::new_v4().as_bytes().to_vec()).unwrap()).collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
}

/// A wrong password or an unreachable server is one clear error, without the password.
#[test]
fn a_bad_database_url_is_refused_clearly() {
    let admin = crate::store::pg::test_admin_url();
    let wrong = admin.replacen("gesync:", "gesync:not-the-password-", 1);
    let err = PgKv::open(&PgConfig::new(wrong)).err().expect("refused").to_string();
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(err.contains("password") || err.contains("authentication"), "{err}");
    let mut closed = PgConfig::new("postgres://gesync:x@127.0.0.1:1/gesync");
    closed.acquire_timeout = std::time::Duration::from_secs(2);
    assert!(PgKv::open(&closed).is_err());
    let kv: &dyn Kv = &pg();
    assert!(kv.shared() && kv.check().is_ok());
}

/// `/healthz` has a connection of its own: with every pooled connection held (a write rush),
/// it still answers, where it used to wait for the pool and fail (issue "Nothing lost", item 2).
#[test]
fn health_is_answered_while_every_pooled_connection_is_held() {
    let mut config = PgConfig::new(crate::store::pg::create_test_database(&crate::store::pg::test_admin_url()));
    config.pool_size = 2;
    config.acquire_timeout = std::time::Duration::from_secs(1);
    let kv = PgKv::open(&config).unwrap();
    let write = kv.begin_write().unwrap();
    let read = kv.begin_read().unwrap();
    assert!(kv.begin_read().is_err(), "the pool is exhausted");
    kv.check().expect("health with the pool exhausted");
    drop((write, read));
    kv.check().unwrap();
}
