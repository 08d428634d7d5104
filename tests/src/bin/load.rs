//! `cargo run --release --bin load -- --phones N --records-per-phone R`: a deadline rush. The real
//! server runs in its own process (this binary re-executed with `--serve`) on loopback with a
//! fresh sled store; N phones (the real client SDK, one tokio runtime, one shared connection
//! pool) log in, create R records offline, sync, edit some records (their own and one of a
//! neighbour's), sync again, and pull; every phase starts on all phones at once. Then district
//! staff list every district over the API and the end state is checked exactly against every
//! phone. Progress goes to stderr; the last line on stdout is one JSON object.
//!
//! Options: `--phones-per-commune K` (default 5), `--communes-per-district D` (default 10),
//! `--spread-ms S` (default 5000): each phone starts each sync phase at a pseudo-random moment
//! within S ms (0: every phone at the same instant, the worst case; see the README for the
//! curve), `--seed N` (default: random, printed) fixes those moments;
//! `--logins-at-once N` (default 16): phones logging in at the same time (1,000 = the storm of
//! a deadline morning; the server answers what it cannot hash in time with 503 and
//! `Retry-After`, which the phones honour); `--phones-dir DIR`: where the phones' stores go. By default they go on a memory file system
//! (`/dev/shm`) when there is one, the server's store staying on disk: real phones write to
//! their own flash, while a thousand simulated ones writing (and `syncfs`-ing) the server's file
//! system would flush the server's disk for it and charge it their journal work.
//! `--unfinalized`: the store is left as an upgrade leaves it until `admin finalize-upgrade`
//! (record metadata in JSON; `form_level` 0 in the JSON), where by default it is finalized.
//! `--database postgres://USER:PASSWORD@HOST:PORT/DB` (an administrator's URL: a new database is
//! made there) runs the server on PostgreSQL; `--replicas N` runs N server processes on it
//! behind a round-robin proxy (server CPU and memory are then summed over the replicas;
//! PostgreSQL's own are not counted).
//!
//! `--store-in-memory`: the server child copies the seeded embedded store into memory and
//! serves from it (nothing durable; the end state is still checked over the API, but the store
//! is not reopened). The difference from a run on sled is the most any storage engine could
//! save (README, "Measured figures").
//!
//! `--pin`: the server process on CPU 0 and the phones on CPU 1 (`taskset`), so that the
//! server's own latency shows rather than the phones' competition for its core.
//!
//! `server_cpu_us` in the JSON: the server's CPU per pushed and per delivered record, the
//! least-squares fit of cpu = a·pushed + b·delivered over the three sync phases (each request's
//! fixed cost is spread over its records); and, net of what the server burns while idle
//! (`idle_per_s`, measured over 3 quiet seconds) and of each request's fixed cost
//! (`per_request`, measured by a fourth phase of no-op syncs, one request each, outside the
//! latency figures), the same fit (`per_pushed_record_net`, `per_delivered_record_net`); and,
//! net of both, phase by phase rather than fitted: the pull phase's CPU over its records
//! (`per_delivered_record_pull_phase_net`), and the first phase's, less its deliveries at that
//! cost, over the records it created (`per_created_record_first_phase_net`). That last figure
//! prices the first phase's deliveries (whole new documents) at the pull phase's rate (mostly
//! edits sent as slices); a created record's cost alone comes from a fifth phase, after the
//! no-op one and outside the latency figures, in which one phone of each commune creates as
//! many records again and syncs them while its neighbours stay idle, so that nothing is
//! delivered (`per_created_record_push_only_net`, net of idle and per-request costs; `push_only`
//! says what it pushed and delivered); then a sixth, in which those phones push one record
//! each: the two apart give a record's own cost and a write request's (its commit and durable
//! flush; `push_only.per_record`, `push_only.per_write_request`). Every phone syncs once more
//! before the end state is checked.

// The report's `json!` is deeper than the macro's default recursion allows.
#![recursion_limit = "256"]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::fleet::{self, FleetConfig, Layout, PhaseStats, TimedTransport};
use tests::bench::{arg, arg_parsed, arg_str, entry, finalize_unless_asked, pin_self_to, replicas_from_args, serve_if_child, store_from_args, store_in_memory, ServerChild};
use tests::{cpu_s, rss_mb};

fn main() {
    serve_if_child();
    if pinned() {
        // The server on the first CPU (see `run`), these phones on the second: the server's
        // own latency shows, not the phones' competition for its core.
        pin_self_to(1);
    }
    let mut config = FleetConfig::new(arg("--phones", 1000), arg("--records-per-phone", 20));
    config.phones_per_commune = arg("--phones-per-commune", config.phones_per_commune);
    config.communes_per_district = arg("--communes-per-district", config.communes_per_district);
    // Phones do blocking file I/O inside `sync` (the SDK's store); extra workers keep one
    // phone's disk write from stalling the others' network I/O.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(8).enable_all().build().unwrap();
    rt.block_on(run(config));
}

/// `--pin`: the server process on CPU 0, the phones on CPU 1.
fn pinned() -> bool {
    std::env::args().any(|a| a == "--pin")
}

/// CPU seconds used by the server process and by this one (the phones).
#[derive(Clone, Copy, Default)]
struct Cpu {
    server: f64,
    phones: f64,
}

impl Cpu {
    fn now(server_pids: &[u32]) -> Cpu {
        Cpu { server: server_pids.iter().map(|p| cpu_s(*p)).sum(), phones: cpu_s(std::process::id()) }
    }
    fn since(self, from: Cpu) -> Cpu {
        Cpu { server: self.server - from.server, phones: self.phones - from.phones }
    }
}

/// `f` on every phone at once, with the CPU the server processes (`server_pids`) and this one
/// spent on it and the requests it made.
async fn measured<F, Fut>(phones: Vec<fleet::Phone>, f: F, server_pids: &[u32], transport: &TimedTransport) -> (Vec<fleet::Phone>, PhaseStats, Cpu, u64)
where
    F: Fn(fleet::Phone) -> Fut,
    Fut: std::future::Future<Output = (fleet::Phone, PhaseStats)> + Send + 'static,
{
    let cpu0 = Cpu::now(server_pids);
    let requests0 = transport.requests.load(Ordering::Relaxed);
    let (phones, s) = fleet::each(phones, f).await;
    let c = Cpu::now(server_pids).since(cpu0);
    (phones, s, c, transport.requests.load(Ordering::Relaxed) - requests0)
}

fn phase(name: &str, s: &PhaseStats) {
    eprintln!(
        "{name:<8} {:>7.1} s  calls {:>6}  errors {}  sync p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        s.wall_s,
        s.calls,
        s.errors,
        fleet::percentile(&s.sync_ms, 50.0),
        fleet::percentile(&s.sync_ms, 99.0),
        fleet::percentile(&s.sync_ms, 100.0)
    );
}

async fn run(config: FleetConfig) {
    let spread = arg("--spread-ms", 5000) as u64;
    let seed: u64 = arg_parsed("--seed").unwrap_or_else(rand::random);
    let layout = Layout::new(config.clone());
    let tmp = tempfile::tempdir().unwrap();
    let in_memory = store_in_memory();
    let store = store_from_args(&tmp.path().join("server"));
    let replicas = replicas_from_args(&store);
    let t = Instant::now();
    {
        let layout = layout.clone();
        store.with_db(move |db| layout.seed(db));
    }
    let form_level = finalize_unless_asked(&store);
    eprintln!(
        "seeded {} districts, {} communes, {} officers in {:.1} s",
        layout.districts.len(),
        layout.communes.len(),
        layout.phones.len(),
        t.elapsed().as_secs_f64()
    );
    let servers: Vec<ServerChild> = (0..replicas).map(|_| ServerChild::spawn_with(&store, pinned().then_some(0), in_memory)).collect();
    let pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
    let addr = entry(&servers).await;
    let url = format!("http://{addr}");

    // Peak server memory, sampled.
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, on, pids) = (peak_rss.clone(), sampling.clone(), pids.clone());
        std::thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                peak.fetch_max(pids.iter().map(|p| rss_mb(*p)).sum::<f64>() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let transport = TimedTransport::new(&url);
    let phones_tmp = match arg_str("--phones-dir") {
        Some(dir) => tempfile::tempdir_in(dir),
        None if Path::new("/dev/shm").is_dir() => tempfile::tempdir_in("/dev/shm"),
        None => tempfile::tempdir(),
    }
    .expect("a directory for the phones' stores");
    eprintln!("server store: {} ({replicas} server process(es)); phone stores: {}", store.arg().split('@').next_back().unwrap_or_default(), phones_tmp.path().display());
    let phones = fleet::phones(&layout, phones_tmp.path(), transport.clone());
    let r = config.records_per_phone;
    let total_records = config.phones * r;
    let mut syncs = PhaseStats::default();
    let mut errors = 0;
    let t_all = Instant::now();

    let u = url.clone();
    let at_once = arg("--logins-at-once", fleet::LOGINS_AT_ONCE);
    let limit: &'static tokio::sync::Semaphore = Box::leak(Box::new(tokio::sync::Semaphore::new(at_once)));
    let (phones, logins) = fleet::each(phones, move |p| fleet::login_within(p, u.clone(), limit)).await;
    eprintln!(
        "login    {:>7.1} s  {} at once: {} answers for {} phones, slowest answer {:.1} s, errors {}",
        logins.wall_s,
        at_once,
        logins.calls,
        config.phones,
        fleet::percentile(&logins.sync_ms, 100.0) / 1000.0,
        logins.errors
    );
    errors += logins.errors;
    let (phones, s) = fleet::each(phones, move |p| fleet::create(p, r)).await;
    phase("create", &s);
    eprintln!("sync phases start within {spread} ms on every phone (seed {seed}; rerun with --seed {seed})");
    let sync = |phase: u64| move |p: fleet::Phone| {
        let wait = fleet::start_offset_ms(seed, phase, &p.username, spread);
        fleet::sync_after(p, wait)
    };
    // The three sync phases, each timed and charged its CPU (the edit phase between is not).
    let mut sync_cpu = Cpu::default();
    // Server CPU, records pushed and records delivered, requests and wall time, of each sync phase.
    let mut by_phase: Vec<(f64, usize, usize, u64, f64)> = Vec::new();
    let mut push_s = 0.0;
    let mut phones = phones;
    let sync_times0 = server_histogram(&servers, SYNC_SECONDS).await;
    for (n, name) in [(1, "sync"), (2, "sync2"), (3, "pull")] {
        if n == 2 {
            let (edited, s) = fleet::each(phones, fleet::edit).await;
            phase("edit", &s);
            phones = edited;
        }
        let (synced, s, c, requests) = measured(phones, sync(n), &pids, &transport).await;
        phones = synced;
        phase(name, &s);
        // The phones' process on one core (`--pin`) busy for most of the phase: their latency
        // figures are then partly their own wait for that core, not the server's.
        eprintln!("         CPU: server {:.1} s, phones {:.1} s ({:.0}% of the phase's wall time)", c.server, c.phones, 100.0 * c.phones / s.wall_s.max(1e-9));
        sync_cpu = Cpu { server: sync_cpu.server + c.server, phones: sync_cpu.phones + c.phones };
        by_phase.push((c.server, s.pushed, s.pulled, requests, s.wall_s));
        if n == 1 {
            push_s = s.wall_s;
        }
        errors += s.errors;
        syncs.merge(s);
    }
    let total_s = t_all.elapsed().as_secs_f64();
    // The server's own time for the same sync requests, from the request read to the answer
    // made (its `gesync_sync_seconds` histogram, over the three phases): without the phones'
    // own processing, and without the time a request waits unread in the server's socket.
    let server_sync = histogram_since(&server_histogram(&servers, SYNC_SECONDS).await, &sync_times0);
    let server_sync_p99_ms = quantile(&server_sync, 0.99) * 1e3;
    let server_sync_within_1s = share_within(&server_sync, 1.0);
    eprintln!(
        "server's own time for these sync requests: p99 {server_sync_p99_ms:.0} ms (from its histogram's buckets), {:.1}% within 1 s",
        server_sync_within_1s * 100.0
    );
    // What the server burns idle (its store's flusher, timers), over 3 quiet seconds after 3
    // more (in which it hands memory back once).
    let idle_per_s = {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cpu0 = Cpu::now(&pids);
        tokio::time::sleep(Duration::from_secs(3)).await;
        Cpu::now(&pids).since(cpu0).server / 3.0
    };
    // A request's own cost: every phone syncs once more with nothing to do (one request each).
    // Not in the latency figures above.
    let (per_request, noop_requests) = {
        let (synced, s, c, requests) = measured(phones, sync(4), &pids, &transport).await;
        phones = synced;
        phase("no-op", &s);
        errors += s.errors;
        (if requests == 0 { 0.0 } else { (c.server - idle_per_s * s.wall_s).max(0.0) / requests as f64 }, requests)
    };
    // A created record's own cost: one phone of each commune creates as many records again and
    // syncs them, its neighbours idle, so nothing is delivered (its own writes come back to no
    // one); net of the idle burn and of each request's cost. Then each of those phones creates
    // one record more and syncs it: with the same number of write requests and a twentieth of
    // the records (at `--records-per-phone 20`), the two apart tell a record's own cost from a
    // write request's (its commit and durable flush). Then every phone syncs once more (not
    // measured), so that the end state below is checked on the records made here too.
    let push_only = {
        let mut seen = std::collections::BTreeSet::new();
        let (mut pushers, idle): (Vec<_>, Vec<_>) = phones.into_iter().partition(|p| seen.insert(p.commune.clone()));
        // (server CPU net of the idle burn, records pushed, records delivered, requests)
        let mut runs: Vec<(f64, usize, usize, u64)> = Vec::new();
        for (n, per_phone) in [(5, r), (6, 1)] {
            let (created, s) = fleet::each(pushers, move |p| fleet::create(p, per_phone)).await;
            errors += s.errors;
            let (synced, s, c, requests) = measured(created, sync(n), &pids, &transport).await;
            pushers = synced;
            phase("push", &s);
            errors += s.errors;
            eprintln!("   push-only phase, {per_phone} a phone: server CPU {:.2} s in {:.1} s, {} records pushed, {} delivered, {requests} requests", c.server, s.wall_s, s.pushed, s.pulled);
            runs.push((c.server - idle_per_s * s.wall_s, s.pushed, s.pulled, requests));
        }
        let (synced, caught_up) = fleet::each(pushers.into_iter().chain(idle).collect(), sync(7)).await;
        errors += caught_up.errors;
        phones = synced;
        PushOnly::of(&runs, per_request)
    };
    // The server's CPU per pushed and per delivered record: the least-squares fit of
    // cpu = a·pushed + b·delivered over the three sync phases (whose mixes differ: the last one
    // only delivers). Each request's fixed cost is spread over its records; net of it and of the
    // idle burn, the same fit of cpu − idle_per_s·wall − per_request·requests.
    let (pushed, delivered) = by_phase.iter().fold((0, 0), |a, p| (a.0 + p.1, a.1 + p.2));
    let (per_pushed, per_delivered) = fit(by_phase.iter().map(|&(c, p, d, _, _)| (c, p, d)));
    let net = |&(c, _, _, r, wall): &(f64, usize, usize, u64, f64)| c - idle_per_s * wall - per_request * r as f64;
    let (per_pushed_net, per_delivered_net) = fit(by_phase.iter().map(|p| (net(p), p.1, p.2)));
    // The same, phase by phase instead of fitted: the pull phase only delivers (records edited
    // since, mostly sent as slices), so its net CPU over its records is a delivered record's
    // cost; the first phase's net CPU less its deliveries at that cost, over its new records, is
    // a created record's. The fit mixes the second phase's edits (dearer than creations) in.
    let per_delivered_pull = by_phase.get(2).filter(|p| p.2 > 0).map_or(0.0, |p| net(p) / p.2 as f64);
    let per_created = by_phase.first().filter(|p| p.1 > 0).map_or(0.0, |p| (net(p) - per_delivered_pull * p.2 as f64) / p.1 as f64);
    for (n, (c, p, d, r, wall)) in by_phase.iter().enumerate() {
        eprintln!("   sync phase {}: server CPU {c:.2} s in {wall:.1} s, {p} records pushed, {d} delivered, {r} requests", n + 1);
    }
    eprintln!("server CPU: {:.0} µs per pushed record, {:.0} µs per delivered record (fit over the three phases)", per_pushed * 1e6, per_delivered * 1e6);
    eprintln!(
        "server CPU: {:.0} ms a second idle; {:.0} µs per request ({noop_requests} no-op syncs); net of both, {:.0} µs per pushed record, {:.0} µs per delivered record",
        idle_per_s * 1e3,
        per_request * 1e6,
        per_pushed_net * 1e6,
        per_delivered_net * 1e6
    );
    eprintln!("server CPU, net, phase by phase: {:.0} µs per delivered record (the pull phase), {:.0} µs per created record (the first phase)", per_delivered_pull * 1e6, per_created * 1e6);
    eprintln!(
        "server CPU, push-only: {:.0} µs per created record net of idle and per-request costs ({} pushed, {} delivered, {} a request); apart: {:.0} µs a record and {:.0} µs a write request ({:.0} µs more than a no-op request)",
        push_only.per_created_net * 1e6,
        push_only.pushed,
        push_only.delivered,
        push_only.per_request_records,
        push_only.per_record * 1e6,
        push_only.per_write_request * 1e6,
        (push_only.per_write_request - per_request) * 1e6
    );

    let t = Instant::now();
    let on_server = fleet::server_records(&url, &layout).await;
    let verdict = fleet::check(&on_server, &phones, true);
    eprintln!("checked {} server records against {} phones in {:.1} s: {verdict:?}", on_server.len(), phones.len(), t.elapsed().as_secs_f64());
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    // Phones that measured their loopback link as slow (a busy server's time taken for the
    // link's) asked for small pages and the slow link's compression.
    let slow_link_requests = server_counter(&servers, "gesync_sync_slow_link_requests_total").await;
    eprintln!("sync requests from phones that took their link for slow: {slow_link_requests} of {}", transport.requests.load(Ordering::Relaxed));
    let rss_end: f64 = pids.iter().map(|p| rss_mb(*p)).sum();
    let request_ms = transport.sync_ms.lock().unwrap().clone();

    // Graceful stop, then the store must open and hold the same number of records.
    let status: Vec<String> = servers.into_iter().map(|s| s.stop().to_string()).collect();
    let status = status.join(", ");
    let lost = if in_memory {
        eprintln!("server stopped ({status}); its store was in memory, so there is none to reopen");
        verdict.lost
    } else {
        let communes: Vec<String> = layout.communes.iter().map(|(c, _)| c.clone()).collect();
        let stored: usize = store.with_db(move |db| communes.iter().map(|c| db.records().record_ids_of(c).unwrap().len()).sum());
        eprintln!("server stopped ({status}); the store reopens with {stored} records");
        // A record the API listed but the reopened store lacks was not durable.
        verdict.lost + on_server.len().saturating_sub(stored)
    };

    println!(
        "{}",
        json!({
            "phones": config.phones,
            "spread_ms": spread,
            "pinned": pinned(),
            "form_level": form_level,
            "store_in_memory": in_memory,
            "seed": seed,
            "records": total_records,
            "communes": layout.communes.len(),
            "districts": layout.districts.len(),
            "requests": transport.requests.load(Ordering::Relaxed),
            "sync_calls": syncs.calls,
            "slow_link_requests": slow_link_requests,
            "errors": errors + transport.failures.load(Ordering::Relaxed) as usize,
            "lost": lost,
            "duplicates": verdict.duplicates,
            "mismatched": verdict.mismatched,
            "p50_ms": fleet::percentile(&syncs.sync_ms, 50.0).round(),
            "p99_ms": fleet::percentile(&syncs.sync_ms, 99.0).round(),
            "max_ms": fleet::percentile(&syncs.sync_ms, 100.0).round(),
            "server_sync_p99_ms": server_sync_p99_ms.round(),
            "server_sync_within_1s": (server_sync_within_1s * 1e4).round() / 1e4,
            "request_p50_ms": fleet::percentile(&request_ms, 50.0).round(),
            "request_p99_ms": fleet::percentile(&request_ms, 99.0).round(),
            "records_per_s": (total_records as f64 / push_s).round(),
            "total_s": (total_s * 10.0).round() / 10.0,
            "sync_cpu_s": {"server": (sync_cpu.server * 10.0).round() / 10.0, "phones": (sync_cpu.phones * 10.0).round() / 10.0},
            "server_cpu_us": {"per_pushed_record": (per_pushed * 1e6).round(), "per_delivered_record": (per_delivered * 1e6).round(),
                              "idle_per_s": (idle_per_s * 1e6).round(), "per_request": (per_request * 1e6).round(),
                              "per_pushed_record_net": (per_pushed_net * 1e6).round(), "per_delivered_record_net": (per_delivered_net * 1e6).round(),
                              "per_delivered_record_pull_phase_net": (per_delivered_pull * 1e6).round(),
                              "per_created_record_first_phase_net": (per_created * 1e6).round(),
                              "per_created_record_push_only_net": (push_only.per_created_net * 1e6).round(),
                              "push_only": {"pushed": push_only.pushed, "delivered": push_only.delivered,
                                            "per_record": (push_only.per_record * 1e6).round(), "per_write_request": (push_only.per_write_request * 1e6).round()},
                              "pushed": pushed, "delivered": delivered},
            "server_rss_mb": peak_rss.load(Ordering::Relaxed).max(rss_end as u64),
            "logins": {"at_once": at_once, "wall_s": (logins.wall_s * 10.0).round() / 10.0, "answers": logins.calls,
                       "slowest_answer_s": (fleet::percentile(&logins.sync_ms, 100.0) / 100.0).round() / 10.0},
        })
    );
}

/// The push-only phases' figures (seconds of server CPU).
struct PushOnly {
    /// The first phase's records and deliveries.
    pushed: usize,
    delivered: usize,
    /// Its records a request.
    per_request_records: usize,
    /// Its CPU net of the idle burn and of a no-op request's cost, over its records.
    per_created_net: f64,
    /// Both phases' CPU (net of the idle burn) as `per_record`·records + `per_write_request`·requests;
    /// NaN (`null` in the JSON) when the two cannot be told apart (one record a phone).
    per_record: f64,
    per_write_request: f64,
}

impl PushOnly {
    /// From the two runs `(cpu net of idle, pushed, delivered, requests)`, many records a request
    /// then one, and a no-op request's cost.
    fn of(runs: &[(f64, usize, usize, u64)], per_request: f64) -> PushOnly {
        let [(c1, p1, d1, r1), (c2, p2, _, r2)] = runs else { panic!("two push-only runs") };
        let (p1f, p2f, r1f, r2f) = (*p1 as f64, *p2 as f64, *r1 as f64, *r2 as f64);
        // c = a·records + f·requests, solved for the two runs.
        let det = p1f * r2f - p2f * r1f;
        let (per_record, per_write_request) = if det.abs() < f64::EPSILON { (f64::NAN, f64::NAN) } else { ((c1 * r2f - c2 * r1f) / det, (p1f * c2 - p2f * c1) / det) };
        PushOnly {
            pushed: *p1,
            delivered: *d1,
            per_request_records: if *r1 == 0 { 0 } else { p1 / *r1 as usize },
            per_created_net: if *p1 == 0 { 0.0 } else { (c1 - per_request * r1f) / p1f },
            per_record,
            per_write_request,
        }
    }
}

/// A counter of the servers' `/metrics`, summed over the replicas.
async fn server_counter(servers: &[ServerChild], name: &str) -> u64 {
    let mut sum = 0;
    for text in servers_metrics(servers).await {
        sum += tests::metric_in(&text, name).unwrap_or_else(|| panic!("{name} is not on /metrics"));
    }
    sum
}

/// Each server's `/metrics` text, read with the token the server child is started with (no
/// login, so no password hash on the server beside the figures).
async fn servers_metrics(servers: &[ServerChild]) -> Vec<String> {
    let mut texts = Vec::with_capacity(servers.len());
    for s in servers {
        texts.push(tests::metrics_text(&format!("http://{}", s.addr)).await.unwrap_or_else(|| panic!("{} answers no /metrics", s.addr)));
    }
    texts
}

/// The servers' histogram of a sync request's own time (see `server/src/api/sync.rs`).
const SYNC_SECONDS: &str = "gesync_sync_seconds";

/// Histogram `name` from the servers' `/metrics`, summed over the replicas: each bucket's upper
/// bound in seconds (the last one infinite) with its cumulative count.
async fn server_histogram(servers: &[ServerChild], name: &str) -> Vec<(f64, u64)> {
    let mut sum: Vec<(f64, u64)> = Vec::new();
    for text in servers_metrics(servers).await {
        for (i, bucket) in buckets_in(&text, name).into_iter().enumerate() {
            match sum.get_mut(i) {
                Some(b) => b.1 += bucket.1,
                None => sum.push(bucket),
            }
        }
    }
    sum
}

/// The buckets of histogram `name` in `/metrics` text (Prometheus' `name_bucket{le="…"} count`
/// lines, in their order: ascending bounds).
fn buckets_in(text: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let (le, count) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The counts of `now` less those of `before` (the same buckets read earlier).
fn histogram_since(now: &[(f64, u64)], before: &[(f64, u64)]) -> Vec<(f64, u64)> {
    now.iter().map(|&(le, n)| (le, n.saturating_sub(before.iter().find(|b| b.0 == le).map_or(0, |b| b.1)))).collect()
}

/// The `q` quantile of a cumulative histogram, interpolated linearly inside its bucket as
/// Prometheus' `histogram_quantile` does (the last finite bound when it falls in the infinite
/// bucket; NaN on no observations).
fn quantile(buckets: &[(f64, u64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return f64::NAN };
    if total == 0 {
        return f64::NAN;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(le, n) in buckets {
        if n as f64 >= rank {
            if le.is_infinite() {
                return lower;
            }
            return lower + (le - lower) * (rank - below as f64) / (n - below) as f64;
        }
        (lower, below) = (le, n);
    }
    lower
}

/// The share of observations within `bound` seconds (a bucket's bound); NaN on none.
fn share_within(buckets: &[(f64, u64)], bound: f64) -> f64 {
    let total = buckets.last().map_or(0, |b| b.1);
    let within = buckets.iter().find(|b| b.0 == bound).map_or(0, |b| b.1);
    within as f64 / total as f64
}

/// The least-squares fit of cpu = a·pushed + b·delivered over `(cpu, pushed, delivered)` points:
/// `(a, b)` in seconds, neither below zero.
fn fit(points: impl Iterator<Item = (f64, usize, usize)>) -> (f64, f64) {
    let (mut pp, mut pd, mut dd, mut pc, mut dc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (c, p, d) in points {
        let (p, d) = (p as f64, d as f64);
        (pp, pd, dd, pc, dc) = (pp + p * p, pd + p * d, dd + d * d, pc + p * c, dc + d * c);
    }
    let det = pp * dd - pd * pd;
    if det.abs() < f64::EPSILON {
        (0.0, 0.0)
    } else {
        (((pc * dd - dc * pd) / det).max(0.0), ((dc * pp - pc * pd) / det).max(0.0))
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::*;

    const METRICS: &str = "# TYPE gesync_sync_seconds histogram\n\
gesync_sync_seconds_bucket{le=\"0.5\"} 90\n\
gesync_sync_seconds_bucket{le=\"1\"} 98\n\
gesync_sync_seconds_bucket{le=\"2.5\"} 100\n\
gesync_sync_seconds_bucket{le=\"+Inf\"} 100\n\
gesync_sync_seconds_sum 31.5\n\
gesync_sync_seconds_count 100\n\
gesync_login_seconds_bucket{le=\"0.5\"} 7\n";

    #[test]
    fn a_histogram_is_read_from_metrics_text_and_its_quantile_interpolated_in_its_bucket() {
        let b = buckets_in(METRICS, "gesync_sync_seconds");
        assert_eq!(b, vec![(0.5, 90), (1.0, 98), (2.5, 100), (f64::INFINITY, 100)]);
        // The 99th of 100 lies halfway through the (1, 2.5] bucket's two observations.
        assert!((quantile(&b, 0.99) - 1.75).abs() < 1e-9, "{}", quantile(&b, 0.99));
        assert!((quantile(&b, 0.5) - 0.5 * 50.0 / 90.0).abs() < 1e-9);
        assert!((share_within(&b, 1.0) - 0.98).abs() < 1e-9);
        // Less an earlier reading: only what happened since.
        let since = histogram_since(&b, &[(0.5, 80), (1.0, 80), (2.5, 80), (f64::INFINITY, 80)]);
        assert_eq!(since, vec![(0.5, 10), (1.0, 18), (2.5, 20), (f64::INFINITY, 20)]);
        assert!((share_within(&since, 1.0) - 0.9).abs() < 1e-9);
        // Beyond the last finite bound: that bound; no observations: NaN.
        assert_eq!(quantile(&[(1.0, 0), (f64::INFINITY, 4)], 0.99), 1.0);
        assert!(quantile(&[(1.0, 0), (f64::INFINITY, 0)], 0.99).is_nan());
    }
}
