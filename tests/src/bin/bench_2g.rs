//! `bench-2g`: a phone's first sync and a week's pushes over the field's link.
//!
//! The real server (a child process, sled on disk) holds a commune of `--records` case records
//! with notes and services. A new phone joins through a slow, dropping link (`tests::slowlink`):
//! logs in, pulls everything, records `--push` new cases and pushes them, with the real SDK's
//! retries and page sizing. Then the same workload runs again on a fresh server through an
//! unshaped link with the protocol as it was before the 2G work (uncompressed, 3 MiB pages),
//! for the byte comparison. Both end states are checked exactly.
//!
//! Bytes are counted on the link, TCP payload both ways: the login's and first sync's against
//! the pulled records, the push's bytes up against the pushed records. Each is compared with
//! the same records as plain JSON at zstd -19 in one piece, and with what the protocol's own
//! form weighs offline (the records as Automerge changes with their ids).
//!
//! Flags: `--records N` (1200), `--push N` (150), `--down BYTES/S` (8000), `--up BYTES/S`
//! (4000), `--connect-ms MS` (600), `--cut-s S` (30; 0 = no cuts), `--seed N` (42).
//! The last line of output is one JSON object.

// The JSON summary is one `json!` of more keys than its default recursion allows.
#![recursion_limit = "256"]

use std::time::Duration;

use client_sdk::SyncOptions;
use tests::bench::{arg, arg_parsed, ServerChild};
use tests::field::{check_exact, fill_commune, newcomer};
use tests::slowlink::Link;

/// Records another officer adds before the newcomer's daily sync (after its push).
const DAILY: usize = 5;

fn main() {
    tests::bench::serve_if_child();
    let records = arg("--records", 1200);
    let push = arg("--push", 150);
    let link = Link {
        down: arg("--down", 8000) as f64,
        up: arg("--up", 4000) as f64,
        connect_delay: Duration::from_millis(arg("--connect-ms", 600) as u64),
        cut_every: match arg("--cut-s", 30) {
            0 => None,
            s => Some(Duration::from_secs(s as u64)),
        },
    };
    let seed: u64 = arg_parsed("--seed").unwrap_or(42);
    // The phones' records are made over months, as in the field, not within the same second: a
    // record's id and its change's time carry the clock, and zstd would find them alike.
    sync_protocol::doc::set_clock(field_clock);
    eprintln!("bench-2g: {records} records to pull, {push} to push, over {}; seed {seed}", link.describe());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (out, baseline) = rt.block_on(async {
        let field = run(records, push, link, &SyncOptions::default(), seed).await;
        // Before the 2G work: one uncompressed page of up to 3 MiB each way.
        let old = SyncOptions { compress: false, first_pull_page: 3 << 20, first_push_page: client_sdk::PUSH_BUDGET, ..SyncOptions::default() };
        let fast = Link { down: 1e9, up: 1e9, connect_delay: Duration::ZERO, cut_every: None };
        let baseline = run(records, push, fast, &old, seed).await;
        (field, baseline)
    });
    let link_s = link.seconds_for(out.bytes_up, out.bytes_down);
    let bytes = out.bytes_up + out.bytes_down;
    let before = baseline.bytes_up + baseline.bytes_down - deflate_saving(records, push, seed);
    eprintln!(
        "pull: {} records in {:.1} s, {} requests; push: {} records in {:.1} s, {} requests; login {:.1} s",
        out.pull_records, out.pull_s, out.pull_attempts, out.push_records, out.push_s, out.push_attempts, out.login_s
    );
    eprintln!(
        "bytes: {} down, {} up ({:.0}% of the old protocol's {}); {} connections, {} cut, {} retries",
        out.bytes_down,
        out.bytes_up,
        100.0 * bytes as f64 / before as f64,
        before,
        out.connections,
        out.cuts,
        out.retries
    );
    eprintln!("wall {:.1} s for {:.1} s of link time: {:.2}x", out.wall_s(), link_s, out.wall_s() / link_s);
    // Each direction's records travel in one phase: the first sync's down, the push's up.
    let (push_up, push_down) = (out.bytes_up - out.first_sync_up, out.bytes_down - out.first_sync_down);
    eprintln!(
        "login and first sync: {} B down, {} B up; push: {push_up} B up, {push_down} B down",
        out.first_sync_down, out.first_sync_up
    );
    eprintln!(
        "daily sync, {} records another officer added: {} B down, {} B up, {:.1} s",
        out.daily_records, out.daily_down, out.daily_up, out.daily_s
    );
    // The information's own size: the same records as plain JSON, zstd -19 in one piece.
    let (plain_down, plain_up) = (plain_json_zstd19(records, seed), plain_json_zstd19(push, seed ^ 0x5eed));
    eprintln!(
        "against the records as plain JSON, zstd -19 in one piece: first sync down {} B for {plain_down} B ({:.2}x), push up {push_up} B for {plain_up} B ({:.2}x); goal 1.5x",
        out.first_sync_down,
        out.first_sync_down as f64 / plain_down as f64,
        push_up as f64 / plain_up as f64
    );
    // What the protocol cannot go below without changing its form: the records as Automerge
    // changes with their 16-byte ids, in one piece at zstd -19, and in pages of 200 at the slow
    // link's level, without and with the records dictionary.
    let (floor_down, floor_up) = (changes_floor(records, seed), changes_floor(push, seed ^ 0x5eed));
    let (slow_level, small_level) = (slow_link_level(usize::MAX), slow_link_level(0));
    eprintln!(
        "a daily sync's page, the same records in pages of 5 at zstd -{}: {} B, {} B with the records dictionary ({:.0}%)",
        small_level,
        floor_down.daily,
        floor_down.daily_dict,
        100.0 * (floor_down.daily_dict as f64 / floor_down.daily as f64 - 1.0)
    );
    for (way, floor, plain) in [("down", floor_down, plain_down), ("up", floor_up, plain_up)] {
        let ratio = |b: u64| b as f64 / plain as f64;
        eprintln!(
            "the same records as Automerge changes with their ids, {way}: {} B in one piece at zstd -19 ({:.2}x); in pages of 200 at zstd -{slow_level}, {} B ({:.2}x), {} B with the records dictionary ({:.2}x)",
            floor.one_piece,
            ratio(floor.one_piece),
            floor.pages,
            ratio(floor.pages),
            floor.pages_dict,
            ratio(floor.pages_dict)
        );
    }
    eprintln!(
        "server CPU: first sync {:.2} s ({:.0} µs a pulled record), push {:.2} s ({:.0} µs a pushed record)",
        out.first_sync_server_cpu_s,
        out.first_sync_server_cpu_s * 1e6 / out.pull_records.max(1) as f64,
        out.push_server_cpu_s,
        out.push_server_cpu_s * 1e6 / out.push_records.max(1) as f64
    );
    let json = serde_json::json!({
        "link": out.link,
        "records": records,
        "pull_records": out.pull_records,
        "pull_attempts": out.pull_attempts,
        "pull_s": round(out.pull_s),
        "push_records": out.push_records,
        "push_attempts": out.push_attempts,
        "push_s": round(out.push_s),
        "login_s": round(out.login_s),
        "bytes_down": out.bytes_down,
        "bytes_up": out.bytes_up,
        "first_sync_bytes_down": out.first_sync_down,
        "first_sync_bytes_up": out.first_sync_up,
        "push_bytes_up": push_up,
        "push_bytes_down": push_down,
        "connections": out.connections,
        "cuts": out.cuts,
        "retries": out.retries,
        "link_s": round(link_s),
        "wall_over_link": round(out.wall_s() / link_s),
        "old_protocol_bytes": before,
        "bytes_vs_old": round(bytes as f64 / before as f64),
        "plain_json_zstd19_down": plain_down,
        "first_sync_down_over_plain_zstd19": round(out.first_sync_down as f64 / plain_down as f64),
        "plain_json_zstd19_up": plain_up,
        "push_up_over_plain_zstd19": round(push_up as f64 / plain_up as f64),
        "changes_with_ids_zstd19_down": floor_down.one_piece,
        "changes_with_ids_pages_slow_level_down": floor_down.pages,
        "changes_with_ids_pages_slow_level_dict_down": floor_down.pages_dict,
        "changes_with_ids_zstd19_up": floor_up.one_piece,
        "changes_with_ids_pages_slow_level_up": floor_up.pages,
        "changes_with_ids_pages_slow_level_dict_up": floor_up.pages_dict,
        "changes_with_ids_pages_of_5_down": floor_down.daily,
        "changes_with_ids_pages_of_5_dict_down": floor_down.daily_dict,
        "daily_records": out.daily_records,
        "daily_bytes_down": out.daily_down,
        "daily_bytes_up": out.daily_up,
        "daily_s": round(out.daily_s),
        "first_sync_server_cpu_s": round(out.first_sync_server_cpu_s),
        "push_server_cpu_s": round(out.push_server_cpu_s),
        "exact": true,
        "seed": seed,
    });
    println!("{json}");
}

/// What deflating each record of the workload one by one (the documents' form before the 2G
/// work) saves over the plain form: the same records, made again from the same seeds.
fn deflate_saving(records: usize, push: usize, seed: u64) -> u64 {
    let mut saving = 0;
    for record in workload(records, seed).iter().chain(&workload(push, seed ^ 0x5eed)) {
        let mut d = sync_protocol::doc::new_record(sync_protocol::RecordKind::GbvCase, record, automerge::ActorId::random()).unwrap();
        saving += (d.save_nocompress().len() - d.save().len()) as u64;
    }
    saving
}

/// The `n` case records the workload makes from `seed` (`field::fill_commune`, `newcomer`).
fn workload(n: usize, seed: u64) -> Vec<serde_json::Value> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|i| tests::field::field_case(&mut rng, i)).collect()
}

/// The `n` records made from `seed` (as the workload makes them) as one JSON array, compressed
/// by zstd at level 19: about what the information itself weighs.
fn plain_json_zstd19(n: usize, seed: u64) -> u64 {
    zstd::bulk::compress(&serde_json::to_vec(&workload(n, seed)).unwrap(), 19).unwrap().len() as u64
}

/// A clock for the phones of this process: each reading one field-clock step after the last
/// (`tests::field::clock_step`), from 2025-01-01 (Vietnam).
fn field_clock() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static NOW: AtomicI64 = AtomicI64::new(tests::field::CLOCK_START);
    let step = tests::field::clock_step;
    let mut t = NOW.load(Ordering::Relaxed);
    while let Err(seen) = NOW.compare_exchange(t, step(t), Ordering::Relaxed, Ordering::Relaxed) {
        t = seen;
    }
    step(t)
}

/// The records as Automerge changes with their ids, compressed the ways [`changes_floor`]
/// says, in bytes.
#[derive(Clone, Copy)]
struct Floor {
    /// In one piece at zstd -19.
    one_piece: u64,
    /// In pages of 200 at the slow link's level, without and with the records dictionary.
    pages: u64,
    pages_dict: u64,
    /// In pages of 5 (a daily sync) at a small page's level, without and with it.
    daily: u64,
    daily_dict: u64,
}

/// The `n` records made from `seed` as one phone's Automerge changes (`save_after(&[])`), each
/// followed by its 16-byte id as a page carries it (made as a phone makes it, on the field
/// clock): compressed in one piece at zstd -19, and in pages of 200 records at the slow link's
/// level, without and with the records dictionary; then the level of a small page on a slow
/// link, and the records in pages of 5 at that level (a daily sync), without and with it.
fn changes_floor(n: usize, seed: u64) -> Floor {
    let actor = automerge::ActorId::random();
    let records: Vec<Vec<u8>> = workload(n, seed)
        .iter()
        .map(|record| {
            let mut d = sync_protocol::doc::new_record(sync_protocol::RecordKind::GbvCase, record, actor.clone()).unwrap();
            [d.save_after(&[]), sync_protocol::RecordId::made_by(&actor).0.to_vec()].concat()
        })
        .collect();
    let zstd = |bytes: &[u8], level| zstd::bulk::compress(bytes, level).unwrap().len() as u64;
    let warm = |pages: std::slice::Chunks<'_, Vec<u8>>, level| {
        let mut c = zstd::bulk::Compressor::with_dictionary(level, sync_protocol::wire::RECORDS_DICT).unwrap();
        pages.map(|page| c.compress(&page.concat()).unwrap().len() as u64).sum()
    };
    let (level, small) = (slow_link_level(usize::MAX), slow_link_level(0));
    Floor {
        one_piece: zstd(&records.concat(), 19),
        pages: records.chunks(200).map(|page| zstd(&page.concat(), level)).sum(),
        pages_dict: warm(records.chunks(200), level),
        daily: records.chunks(5).map(|page| zstd(&page.concat(), small)).sum(),
        daily_dict: warm(records.chunks(5), small),
    }
}

/// The zstd level of a page of `len` bytes on a slow link (the large pages' level for
/// `usize::MAX`, the small pages' for 0).
fn slow_link_level(len: usize) -> i32 {
    sync_protocol::wire::zstd_level(sync_protocol::wire::FLAG_ZSTD | sync_protocol::wire::FLAG_SLOW_LINK, len)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One run on a fresh server: fill, join over `link`, check exactly.
async fn run(records: usize, push: usize, link: Link, options: &SyncOptions, seed: u64) -> tests::field::Outcome {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    {
        let db = gesync_server::open_db(&data).unwrap();
        tests::seed(&db, 0);
    }
    let server = ServerChild::spawn(&data);
    let url = format!("http://{}", server.addr);
    let mut expected = fill_commune(&url, dir.path(), records, seed).await;
    let (phone, out, mine) = newcomer(server.addr, Some(server.pid()), dir.path(), link, tests::field::Work { push, daily: DAILY }, options, seed).await;
    expected.extend(mine);
    if let Err(e) = check_exact(&url, &phone, &expected).await {
        eprintln!("error: the end state is wrong over {}: {e}", out.link);
        std::process::exit(1);
    }
    let _ = server.stop();
    out
}
