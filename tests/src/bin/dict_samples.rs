//! Writes the samples that `scripts/train-dict.sh` trains the records dictionary on
//! (`sync-protocol/src/records.zdict`, see `sync_protocol::wire::FLAG_RECORDS_DICT`).
//!
//! The samples are synthetic records of the three kinds in the forms a sync page carries them:
//! a record's first change, its whole document, and an owner's edit. **They hold no free text**
//! (notes, titles and reasons are empty): the dictionary ships inside every phone's app, so it
//! must carry nothing an officer wrote, and a dictionary that had learned the benchmarks' own
//! note vocabulary would flatter `bench-2g`. What it learns is the layout: Automerge's chunk
//! headers and columns, the schema's field names and enumerations, dates, the commune codes'
//! shape, and the names of public service providers.
//!
//! Usage: `dict-samples OUT_DIR [RECORDS]` (deterministic: the same files every run).

use std::path::PathBuf;

use automerge::ActorId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sync_protocol::doc;
use sync_protocol::schema::{GBV_SERVICE_KINDS, RETURNEE_SUPPORT_KINDS};
use sync_protocol::RecordKind;

/// Public bodies that give services (names, not people): what officers write as a provider.
const PROVIDERS: &[&str] = &[
    "Trạm y tế xã",
    "Trung tâm y tế huyện",
    "Bệnh viện đa khoa tỉnh",
    "Trung tâm trợ giúp pháp lý tỉnh",
    "Hội Liên hiệp Phụ nữ xã",
    "Công an xã",
    "Nhà tạm lánh",
    "Trung tâm công tác xã hội tỉnh",
    "Phòng Lao động - Thương binh và Xã hội",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: dict-samples OUT_DIR [RECORDS]");
        std::process::exit(2);
    };
    let n: usize = match args.next().map(|a| a.parse()) {
        None => 3000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("error: RECORDS must be a whole number");
            std::process::exit(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        std::process::exit(1);
    }
    doc::set_clock(sample_clock);
    let mut rng = StdRng::seed_from_u64(0x6773_7963);
    let phones: Vec<ActorId> = (0..20).map(|_| ActorId::from(rng.gen::<[u8; 16]>().to_vec())).collect();
    for i in 0..n {
        let (kind, record) = record(&mut rng, i);
        let actor = phones.choose(&mut rng).expect("phones").clone();
        let mut d = doc::new_record(kind, &record, actor).expect("a sample record is valid");
        let first = d.save_after(&[]);
        let heads = d.get_heads();
        match i % 4 {
            // An owner's edit: what a daily sync carries most.
            0 | 1 => {
                let (path, value) = match kind {
                    RecordKind::GbvCase => ("status", json!("closed")),
                    RecordKind::TraffickingReturnee => ("reintegrated", json!(true)),
                    RecordKind::NewsItem => ("channel", json!("social_media")),
                };
                doc::set_path(&mut d, path, &value).expect("a sample edit is valid");
                write(&out, i, "edit", &d.save_after(&heads));
            }
            _ => write(&out, i, "doc", &doc::save_record(&mut d)),
        }
        write(&out, i, "first", &first);
    }
}

/// Change times for the samples: from 2025-01-01, one field-clock step apart
/// (`tests::field::clock_step`), the same every run (so the same samples train the same
/// dictionary).
fn sample_clock() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static NOW: AtomicI64 = AtomicI64::new(tests::field::CLOCK_START);
    let t = NOW.load(Ordering::Relaxed);
    NOW.store(tests::field::clock_step(t), Ordering::Relaxed);
    t
}

fn write(dir: &std::path::Path, i: usize, form: &str, bytes: &[u8]) {
    let path = dir.join(format!("{i:05}.{form}"));
    if let Err(e) = std::fs::write(&path, bytes) {
        eprintln!("error: cannot write {}: {e}", path.display());
        std::process::exit(1);
    }
}

/// A record of each kind in turn (cases twice as often), with fields drawn from the schema.
fn record(rng: &mut StdRng, i: usize) -> (RecordKind, Value) {
    let commune = format!("{:05}", rng.gen_range(1..32_000));
    let date = |rng: &mut StdRng| format!("{}-{:02}-{:02}", rng.gen_range(2024..2031), rng.gen_range(1..13), rng.gen_range(1..29));
    let sex = |rng: &mut StdRng| *["female", "female", "male", "other", "unknown"].choose(rng).expect("sexes");
    match i % 4 {
        0 | 1 => {
            let services: Vec<Value> = (0..rng.gen_range(0..4))
                .map(|_| json!({"kind": GBV_SERVICE_KINDS.choose(rng), "provided_on": date(rng), "provider": PROVIDERS.choose(rng)}))
                .collect();
            let kinds: Vec<&str> =
                ["physical", "psychological", "sexual", "economic"].into_iter().filter(|_| rng.gen_bool(0.4)).collect();
            (
                RecordKind::GbvCase,
                json!({
                    "commune": commune, "detected_on": date(rng),
                    "setting": if rng.gen_bool(0.8) { "domestic" } else { "other_gbv" },
                    "violence_types": kinds,
                    "victim": {"sex": sex(rng), "birth_year": rng.gen_range(1940..2020), "ethnic_minority": rng.gen_bool(0.5), "disability": rng.gen_bool(0.1)},
                    "services": services,
                    "perpetrator": {"detected": rng.gen_bool(0.8), "sex": sex(rng), "prosecuted": rng.gen_bool(0.1), "counselled": rng.gen_bool(0.5)},
                    "status": if rng.gen_bool(0.7) { "open" } else { "closed" },
                    "notes": "",
                }),
            )
        }
        2 => {
            let support: Vec<Value> =
                (0..rng.gen_range(0..4)).map(|_| json!({"kind": RETURNEE_SUPPORT_KINDS.choose(rng), "provided_on": date(rng)})).collect();
            (
                RecordKind::TraffickingReturnee,
                json!({
                    "commune": commune, "identified_on": date(rng), "sex": sex(rng), "birth_year": rng.gen_range(1960..2015),
                    "needs_support": rng.gen_bool(0.8), "support": support, "reintegrated": rng.gen_bool(0.4),
                }),
            )
        }
        _ => {
            let channel = ["loudspeaker", "commune_website", "bulletin_board", "social_media", "other"].choose(rng);
            (RecordKind::NewsItem, json!({"commune": commune, "published_on": date(rng), "channel": channel, "title": ""}))
        }
    }
}
