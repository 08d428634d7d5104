//! The seeded convergence simulation, on the cores alone: phones of two communes and a reviewer
//! create and edit records offline, concurrently, and sync in random order with random page
//! sizes against an in-memory server that applies the core's plans. Each phone runs the phone's
//! real sync session (`client_core::Session`, which client-sdk and the app drive), so the
//! proof covers the loop that ships. At the end every phone
//! holds exactly its scope's records, each at the server's version, and the counters the plans
//! moved equal the counters recomputed from the documents. Set `GESYNC_SEED` to replay a run.

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sync_protocol::automerge::ActorId;
use sync_protocol::{doc, RecordId, RecordKind};

use support::{officer, reviewer, tree, MemServer, Phone};

fn seed() -> u64 {
    let seed = std::env::var("GESYNC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::thread_rng().gen());
    println!("GESYNC_SEED={seed}");
    seed
}

const DATES: [&str; 5] = ["2025-01-15", "2025-03-31", "2025-04-01", "2025-08-20", "2026-02-02"];

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let tree = tree();
    let mut server = MemServer { epoch: 1, ..MemServer::default() };
    let page = |rng: &mut StdRng| [4096u32, 16 * 1024, 3 * 1024 * 1024][rng.gen_range(0..3)];
    let actor = |rng: &mut StdRng| ActorId::from(rng.gen::<[u8; 16]>().to_vec());
    let mut phones = vec![
        Phone::new(officer("an", "04701", "an-1"), actor(&mut rng), page(&mut rng)),
        Phone::new(officer("binh", "04701", "binh-1"), actor(&mut rng), page(&mut rng)),
        Phone::new(officer("chau", "04702", "chau-1"), actor(&mut rng), page(&mut rng)),
        Phone::new(reviewer("dung", "dung-web"), actor(&mut rng), page(&mut rng)),
    ];
    // Half the runs lose the store: a backup taken at one step is restored at a later one, and
    // the phones put back what they had pushed in between (the store epoch).
    let restore = rng.gen_bool(0.5).then(|| (rng.gen_range(50..150), rng.gen_range(150..250)));
    let mut backup = None;
    for step in 0..300 {
        match restore {
            Some((taken, _)) if taken == step => backup = Some(server.clone()),
            Some((_, back)) if back == step => server = backup.take().unwrap().restored(rng.gen_range(1..u64::MAX)),
            _ => {}
        }
        let i = rng.gen_range(0..phones.len());
        let phone = &mut phones[i];
        match rng.gen_range(0..10) {
            // Record a news item in a commune of the phone's scope.
            0..=2 => {
                let communes = phone.who.record_communes(&tree);
                let commune = &communes[rng.gen_range(0..communes.len())];
                let date = DATES[rng.gen_range(0..DATES.len())];
                let d = doc::new_record(RecordKind::NewsItem, &json!({"commune": commune, "published_on": date, "title": format!("tin {step}")}), phone.actor.clone()).unwrap();
                phone.put(RecordId(rng.gen()), d);
            }
            // Edit a record the phone holds: the title, or the date (which moves the counters),
            // or delete it.
            3..=6 if !phone.ids().is_empty() => {
                let ids = phone.ids();
                let id = ids[rng.gen_range(0..ids.len())];
                let mut d = phone.doc(id);
                match rng.gen_range(0..5) {
                    0 => doc::delete_record(&mut d, "recorded twice").unwrap(),
                    1 | 2 => doc::set_path(&mut d, "published_on", &json!(DATES[rng.gen_range(0..DATES.len())])).unwrap(),
                    _ => doc::set_path(&mut d, "title", &json!(format!("sửa {step}"))).unwrap(),
                }
                phone.put(id, d);
            }
            // Sync (the phone may change its page size: the link changed).
            _ => {
                if rng.gen_bool(0.2) {
                    phone.page_bytes = page(&mut rng);
                }
                phone.sync(&mut server, &tree);
            }
        }
    }
    // Everyone syncs twice: the first round brings every change to the server, the second
    // brings every phone what the others pushed in the first.
    for _ in 0..2 {
        for phone in &mut phones {
            phone.sync(&mut server, &tree);
        }
    }
    assert!(!server.records.is_empty());
    for phone in &mut phones {
        let scope = phone.who.record_communes(&tree);
        let expected: std::collections::BTreeSet<RecordId> =
            server.records.iter().filter(|(_, s)| scope.contains(&s.meta.commune)).map(|(id, _)| *id).collect();
        let held: std::collections::BTreeSet<RecordId> = phone.ids().into_iter().collect();
        assert_eq!(held, expected, "{} holds exactly its scope's records (seed {seed})", phone.who.username);
        assert_eq!(phone.store.pending(), 0, "{} has nothing left to send", phone.who.username);
        for id in phone.ids() {
            let mut d = phone.doc(id);
            let id = &id;
            let mut stored = sync_protocol::automerge::AutoCommit::load(&server.records[id].doc).unwrap();
            assert_eq!(d.get_heads(), stored.get_heads(), "{} holds record {id} at the server's version (seed {seed})", phone.who.username);
            assert_eq!(doc::view(&d).unwrap(), doc::view(&stored).unwrap());
        }
    }
    assert_eq!(server.counters, server.recomputed_counters(&tree), "the plans' counter deltas add up to the documents' figures (seed {seed})");
    // Sequence numbers: the feed holds each record once, at its latest change.
    assert_eq!(server.feed.len(), server.records.len());
    for ((commune, seq), id) in &server.feed {
        let meta = server.meta(id).unwrap();
        assert_eq!((&meta.commune, meta.seq), (commune, *seq));
    }
}

#[test]
fn phones_and_server_converge_with_exact_counters() {
    let seed = seed();
    let rounds = std::env::var("GESYNC_SIM_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    for round in 0..rounds {
        run(seed.wrapping_add(round));
    }
}
