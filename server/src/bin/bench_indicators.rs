//! `cargo run --release --bin bench-indicators [-- --records N] [--database URL]`: loads N
//! records (default 1,000,000) over 1 province, 10 districts and 200 communes through the real
//! write path into a sled store on disk (or an empty PostgreSQL database), then measures reading a district's figures for a year, the cost of one
//! record's change to the figures, and a rebuild from scratch with the longest wait of a write
//! beside it. Last line: one JSON object.
#![forbid(unsafe_code)]

use std::time::Instant;

use gesync_server::model::{OrgUnit, Principal, Role};
use indicators::{Period, Quarter};
use serde_json::json;
use sync_protocol::automerge::ActorId;
use sync_protocol::doc;
use sync_protocol::wire::{PushDoc, SyncRequest};
use sync_protocol::{heads_to_wire, RecordId, RecordKind};

const DISTRICTS: usize = 10;
const COMMUNES_PER_DISTRICT: usize = 20;
const BATCH: usize = 2000;

fn district(d: usize) -> String {
    format!("{}", 101 + d)
}
fn commune(d: usize, c: usize) -> String {
    format!("{}{:02}", 101 + d, c + 1)
}

/// A deterministic, varied record: mostly cases and news items, some returnees.
fn record(i: usize, d: usize) -> (RecordKind, serde_json::Value) {
    let c = commune(d, i % COMMUNES_PER_DISTRICT);
    let date = format!("{}-{:02}-{:02}", 2024 + (i / 7) % 2, 1 + (i / 3) % 12, 1 + i % 28);
    match i % 10 {
        0..=4 => (
            RecordKind::GbvCase,
            json!({"commune": c, "detected_on": date, "victim": {"sex": if i.is_multiple_of(9) { "male" } else { "female" }, "birth_year": 1940 + (i % 75) as i64, "ethnic_minority": i.is_multiple_of(3)},
                   "services": if i.is_multiple_of(5) { json!([]) } else { json!([{"kind": "health"}]) },
                   "perpetrator": {"detected": i.is_multiple_of(2), "prosecuted": i.is_multiple_of(11), "counselled": i.is_multiple_of(4), "sex": "male"}}),
        ),
        5 => (RecordKind::TraffickingReturnee, json!({"commune": c, "identified_on": date, "sex": "female", "birth_year": 1995, "needs_support": true, "support": if i.is_multiple_of(3) { json!([]) } else { json!([{"kind": "health"}]) }})),
        _ => (RecordKind::NewsItem, json!({"commune": c, "published_on": date, "channel": "loudspeaker"})),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.iter().position(|a| a == "--records").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("gesync-bench-indicators-{}", std::process::id()));
    // `--database URL`: an empty PostgreSQL database instead of sled.
    let db = match args.iter().position(|a| a == "--database").and_then(|i| args.get(i + 1)) {
        Some(url) => gesync_server::Db::open(Box::new(gesync_server::store::PgKv::open(&gesync_server::store::PgConfig::new(url.clone())).expect("database"))).expect("store"),
        None => gesync_server::open_db(&dir).expect("store"),
    };
    let unit = |code: String, parent: Option<String>, level: &str| OrgUnit::new(code.clone(), format!("Đơn vị {code}"), parent, level);
    db.org_units().put_org_unit(unit("04".into(), None, "province"), None).unwrap();
    for d in 0..DISTRICTS {
        db.org_units().put_org_unit(unit(district(d), Some("04".into()), "district"), None).unwrap();
        for c in 0..COMMUNES_PER_DISTRICT {
            db.org_units().put_org_unit(unit(commune(d, c), Some(district(d)), "commune"), None).unwrap();
        }
    }

    // Load through the real write path (merge, checks, feed, counters, flush per batch), with
    // documents made on another thread.
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, SyncRequest)>(2);
    let producer = std::thread::spawn(move || {
        let actors: Vec<ActorId> = (0..DISTRICTS).map(|_| ActorId::random()).collect();
        let mut i = 0;
        let mut b = 0;
        while i < n {
            let d = b % DISTRICTS;
            let push = (i..(i + BATCH).min(n))
                .map(|k| {
                    let (kind, json) = record(k, d);
                    let mut doc = doc::new_record(kind, &json, actors[d].clone()).expect("valid record");
                    PushDoc { id: RecordId::random(), changes: doc.save(), heads: heads_to_wire(&doc.get_heads()) }
                })
                .collect();
            if tx.send((d, SyncRequest { push, ..Default::default() })).is_err() {
                return;
            }
            i += BATCH;
            b += 1;
        }
    });
    let mut loaded = 0;
    for (d, req) in rx {
        let who = Principal { username: format!("loader{d}"), role: Role::DistrictStaff, org_unit: district(d), device_id: format!("loader-{d}") };
        let resp = db.records().sync(&who, &req).expect("sync");
        assert!(resp.results.iter().all(|r| r.outcome == sync_protocol::wire::PushOutcome::Accepted));
        loaded += req.push.len();
        if loaded % 100_000 < BATCH {
            eprintln!("loaded {loaded} records in {:.0} s", t.elapsed().as_secs_f64());
        }
    }
    producer.join().unwrap();
    let load_s = t.elapsed().as_secs_f64();

    // Reading one district's figures for a year: counters only.
    let year = Period::whole_year(2025).unwrap();
    let mut reads = Vec::new();
    let mut check = 0i64;
    for k in 0..201 {
        let t = Instant::now();
        let r = db.figures().indicators(&district(k % DISTRICTS), year).unwrap();
        reads.push(t.elapsed().as_secs_f64() * 1000.0);
        check += r.indicators[0].denominator;
    }
    assert!(check > 0);

    // One record's change to the figures: its contribution moves to another quarter and back.
    let ids = db.records().record_ids_of(&commune(3, 7)).unwrap();
    let mut updates = Vec::new();
    // Records' changes go to the counters in their request's one write transaction: timed
    // here as batches of 100 moved records (one transaction each), per record.
    for chunk in ids.iter().take(1000).collect::<Vec<_>>().chunks(100) {
        let mut forth = Vec::new();
        for id in chunk {
            let Some(c) = db.records().get_meta(id).unwrap().and_then(|m| m.contribution) else { continue };
            let mut moved = c.clone();
            moved.quarter = Quarter::new(c.quarter.year(), c.quarter.q() % 4 + 1).unwrap();
            forth.push((Some(c), Some(moved)));
        }
        let back: Vec<_> = forth.iter().map(|(a, b)| (b.clone(), a.clone())).collect();
        let t = Instant::now();
        db.figures().apply_figure_changes(&forth).unwrap();
        updates.push(t.elapsed().as_secs_f64() * 1e6 / forth.len().max(1) as f64);
        db.figures().apply_figure_changes(&back).unwrap();
    }

    let before = db.figures().all_counters().unwrap();
    // A writer beside the rebuild (an audit entry every 10 ms, a write transaction each): the
    // longest one of its writes waited is about the rebuild's longest hold of the write lock.
    let rebuilding = std::sync::atomic::AtomicBool::new(true);
    let t = Instant::now();
    let (rebuilt, writer_waited) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut longest = 0f64;
            while rebuilding.load(std::sync::atomic::Ordering::Acquire) {
                let t = Instant::now();
                db.audit_log().audit(gesync_server::db::AuditEvent { user: "bench".into(), device_id: None, action: "bench", target: String::new() }).unwrap();
                longest = longest.max(t.elapsed().as_secs_f64());
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            longest
        });
        let rebuilt = db.rebuild_figures().unwrap();
        rebuilding.store(false, std::sync::atomic::Ordering::Release);
        (rebuilt, writer.join().unwrap())
    });
    let rebuild_s = t.elapsed().as_secs_f64();
    assert_eq!(rebuilt, n);
    assert_eq!(db.figures().all_counters().unwrap(), before, "incremental figures equal a rebuild");
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("load {load_s:.0} s ({:.0} records/s)", n as f64 / load_s);
    println!(
        "{}",
        json!({
            "records": n,
            "read_district_year_ms": (median(reads) * 1000.0).round() / 1000.0,
            "update_per_record_us": median(updates).round(),
            "rebuild_s": (rebuild_s * 10.0).round() / 10.0,
            "write_waited_during_rebuild_s": (writer_waited * 1000.0).round() / 1000.0,
            "load_records_per_s": (n as f64 / load_s).round(),
        })
    );
}
