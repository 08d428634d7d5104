//! `bench-record`: what one created record costs the server, layer by layer, with nothing else
//! running: the floor under `load`'s "created record" figure (issue 25's goal is at most 80 µs
//! of server CPU a pushed record).
//!
//! `--records N` (5,000) new case records, as a phone pushes them (whole documents), go through
//! three layers, each timed on its own, `--per-request N` (20; at most the server's bound a request)
//! records to a request where there are requests:
//! 1. **Automerge**, the library's own steps for one record: load the pushed document, walk it
//!    for the schema's checks, its view and its conflicts (`doc::inspect`), save it, drop it;
//!    and, to compare with the walk, Automerge's own read of the whole document (`hydrate`).
//! 2. **The core** (`sync_core::push`): `merge` (the load and the checks on the pushed bytes)
//!    and `decide` (the walk, the typed record, the figures' contribution, the stored form): all
//!    the server's arithmetic on a record, no store.
//! 3. **The data layer** (`Records::sync`, no HTTP): the core, the write transaction and the
//!    wait for the disk, on an in-memory store and on sled in a temporary directory.
//!
//! What is left of `load`'s figure above the third layer is the request: HTTP, the token, the
//! wire's framing and compression, the hand-over to a blocking thread.
//!
//! Two kinds of record: the case `load` pushes (`tests::bench::gbv_case`) and the case with
//! free-text notes that `bench-2g` uses (`tests::field::field_case`). Each step runs three times
//! over all the records; the median round is printed, in µs a record. A record that is not
//! accepted stops the benchmark with one line and exit 1. `--seed N` (42) draws the notes. The
//! last line of output is one JSON object.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use automerge::{ActorId, AutoCommit, LoadOptions, OnPartialLoad, ReadDoc, VerificationMode};
use gesync_server::db::Db;
use gesync_server::model::{OrgTree, OrgUnit, Principal, Role};
use rand::{rngs::StdRng, SeedableRng};
use serde_json::{json, Value};
use sync_core::push::{Context, Verdict};
use sync_protocol::wire::{PushDoc, PushOutcome, SyncRequest};
use sync_protocol::{doc, heads_to_wire, RecordId, RecordKind};
use tests::bench::{arg, gbv_case};

const ROUNDS: usize = 3;

fn main() {
    // Records to a request in the data layer's step: 20, as in `load`'s push-only phase.
    let per_request = arg("--per-request", 20).clamp(1, gesync_server::records::MAX_DOCS_PER_REQUEST);
    let records = arg("--records", 5_000).max(per_request);
    let seed = arg("--seed", 42) as u64;
    eprintln!("{records} new records of each kind, {ROUNDS} rounds a step, median round (seed {seed}; rerun with --seed {seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    // (what stderr calls it, its key in the JSON, the records)
    let kinds: [(&str, &str, Vec<Value>); 2] = [
        ("load's case", "load_case", (0..records).map(gbv_case).collect()),
        ("case with notes", "with_notes", (0..records).map(|i| tests::field::field_case(&mut rng, i)).collect()),
    ];
    let mut summary = serde_json::Map::new();
    for (name, key, cases) in &kinds {
        let pushes = pushes_of(cases);
        let avg_bytes = pushes.iter().map(|p| p.changes.len()).sum::<usize>() / pushes.len();
        eprintln!("{name}: {avg_bytes} B a pushed document");
        let figures = json!({
            "document_bytes": avg_bytes,
            "automerge": automerge_steps(&pushes),
            "core": core_steps(&pushes),
            "data_layer": {"memory": data_layer(&pushes, per_request, false), "sled": data_layer(&pushes, per_request, true)},
        });
        summary.insert(key.to_string(), figures);
    }
    println!("{}", Value::Object(summary));
}

/// Each case as a phone pushes a record the server has never seen: its whole document.
fn pushes_of(cases: &[Value]) -> Vec<PushDoc> {
    cases
        .iter()
        .map(|case| {
            let mut d = doc::new_record(RecordKind::GbvCase, case, ActorId::random()).expect("the benchmark's case is valid");
            PushDoc { id: RecordId::random(), changes: doc::save_record(&mut d), heads: heads_to_wire(&d.get_heads()) }
        })
        .collect()
}

/// The median of `ROUNDS` runs of `round`, each returning its µs a record.
fn median(mut round: impl FnMut() -> f64) -> f64 {
    middle((0..ROUNDS).map(|_| round()).collect())
}

/// The median of `ROUNDS` figures.
fn middle(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[ROUNDS / 2]
}

fn per_record(started: Instant, n: usize) -> f64 {
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// As `sync_core::push::merge` loads a record new to the server.
fn load(bytes: &[u8]) -> AutoCommit {
    let options = LoadOptions::new().on_partial_load(OnPartialLoad::Ignore).verification_mode(VerificationMode::Check);
    AutoCommit::load_with_options(bytes, options).expect("the pushed document loads")
}

fn automerge_steps(pushes: &[PushDoc]) -> Value {
    let n = pushes.len();
    let load_us = median(|| {
        let t = Instant::now();
        let docs: Vec<AutoCommit> = pushes.iter().map(|p| load(&p.changes)).collect();
        let us = per_record(t, n);
        drop(docs);
        us
    });
    let mut docs: Vec<AutoCommit> = pushes.iter().map(|p| load(&p.changes)).collect();
    let inspect_us = median(|| {
        let t = Instant::now();
        for d in docs.iter_mut() {
            doc::inspect(d).expect("the benchmark's record passes the schema");
        }
        per_record(t, n)
    });
    let save_us = median(|| {
        let t = Instant::now();
        let bytes: usize = docs.iter_mut().map(|d| doc::save_record(d).len()).sum();
        std::hint::black_box(bytes);
        per_record(t, n)
    });
    let drop_us = median(|| {
        let docs: Vec<AutoCommit> = pushes.iter().map(|p| load(&p.changes)).collect();
        let t = Instant::now();
        drop(docs);
        per_record(t, n)
    });
    // For comparison, not in the sum: Automerge's own read of the whole document in one call
    // (winning values only, so it could not replace the walk, which checks every value).
    let hydrate_us = median(|| {
        let t = Instant::now();
        for d in docs.iter() {
            std::hint::black_box(d.hydrate(automerge::ROOT, None).ok());
        }
        per_record(t, n)
    });
    let sum = load_us + inspect_us + save_us + drop_us;
    eprintln!("  automerge:  load {load_us:.1}  inspect {inspect_us:.1}  save {save_us:.1}  drop {drop_us:.1}  = {sum:.1} µs a record (hydrate, to compare with inspect: {hydrate_us:.1})");
    json!({"load_us": load_us, "inspect_us": inspect_us, "save_us": save_us, "drop_us": drop_us, "sum_us": sum, "hydrate_us": hydrate_us})
}

/// The officer of commune 04701 and the seeded tree, as the server sees them.
fn officer_and_tree() -> (Principal, OrgTree) {
    let tree = OrgTree::new(tests::TREE.iter().map(|(code, name, parent, level)| OrgUnit::new(*code, *name, parent.map(str::to_string), *level)));
    let who = Principal { username: "officer1".into(), role: Role::CommuneOfficer, org_unit: "04701".into(), device_id: "bench".into() };
    (who, tree)
}

fn core_steps(pushes: &[PushDoc]) -> Value {
    let (who, tree) = officer_and_tree();
    let ctx = Context { who: &who, tree: &tree, now: 1_750_000_000, own_actor: None, relay_open: false, inflation: None, report_rows: false };
    let n = pushes.len();
    let merge_all = || -> Vec<sync_core::push::Merged> {
        pushes.iter().map(|p| sync_core::push::merge(ctx, p, None).expect("not corrupt").unwrap_or_else(|v| refused(&v))).collect()
    };
    let merge_us = median(|| {
        let t = Instant::now();
        let merged = merge_all();
        let us = per_record(t, n);
        drop(merged);
        us
    });
    let owners = HashMap::new();
    let decide_us = median(|| {
        let merged = merge_all();
        let t = Instant::now();
        for m in merged {
            match sync_core::push::decide(ctx, m, &owners).expect("not corrupt") {
                Verdict::Write(p) => drop(p),
                v => refused(&v),
            }
        }
        per_record(t, n)
    });
    let sum = merge_us + decide_us;
    eprintln!("  core:       merge {merge_us:.1}  decide {decide_us:.1}  = {sum:.1} µs a record");
    json!({"merge_us": merge_us, "decide_us": decide_us, "sum_us": sum})
}

fn refused(v: &Verdict) -> ! {
    eprintln!("error: the benchmark's record was not accepted: {v:?}");
    std::process::exit(1)
}

/// `Records::sync` of every record, `per_request` to a request, on a fresh store each round
/// (in memory, or sled in a temporary directory): wall time and this process's CPU time (sled's
/// own threads included), µs a record.
fn data_layer(pushes: &[PushDoc], per_request: usize, on_sled: bool) -> Value {
    let (who, _) = officer_and_tree();
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..ROUNDS {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let db = if on_sled {
            gesync_server::open_db(&tmp.path().join("store")).expect("store")
        } else {
            Db::open(Box::new(gesync_server::store::MemKv::default())).expect("store")
        };
        tests::seed_tree(&db);
        let mut cursor = Vec::new();
        let (cpu0, t) = (tests::cpu_s(std::process::id()), Instant::now());
        for batch in pushes.chunks(per_request) {
            let req = SyncRequest { cursor, push: batch.to_vec(), ..Default::default() };
            let resp = db.records().sync_unless(&who, &req, &AtomicBool::new(false)).expect("the store takes the records");
            if let Some(refusal) = resp.results.iter().find(|r| r.outcome != PushOutcome::Accepted) {
                eprintln!("error: the benchmark's record was not accepted: {:?}", refusal.outcome);
                std::process::exit(1);
            }
            cursor = resp.cursor;
        }
        wall.push(per_record(t, pushes.len()));
        cpu.push((tests::cpu_s(std::process::id()) - cpu0) * 1e6 / pushes.len() as f64);
    }
    let (cpu, wall) = (middle(cpu), middle(wall));
    eprintln!("  data layer on {}: {cpu:.1} µs of CPU a record ({wall:.1} µs wall), {per_request} a request", if on_sled { "sled" } else { "memory" });
    json!({"cpu_us": cpu, "wall_us": wall, "per_request": per_request})
}
