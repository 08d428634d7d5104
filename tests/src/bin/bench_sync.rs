//! `cargo run --release --bin bench-sync`: the sync protocol's costs against the real server
//! (its own process, sled on disk, HTTP on loopback behind a byte-counting proxy), driven by
//! the real client SDK. Prints progress, then one JSON object as the last line.
//!
//! `server_cpu_us` in the JSON: the server's CPU per delivered record in a bulk pull (a second
//! phone of the commune pulling the records the first one holds) and per pushed record in the
//! ingest, both in full pages, where each request's own cost is spread over many records.
//!
//! Sizes can be reduced for a quick run: `--records 200 --hold 2000 --ingest 10000`.
//! `--unfinalized` leaves the store as an upgrade leaves it until `admin finalize-upgrade`
//! (record metadata in JSON), where by default it is finalized. With
//! `--database postgres://USER:PASSWORD@HOST:PORT/DB` (an administrator's URL: a new database is
//! made there) the server uses PostgreSQL, and `--replicas N` runs N server processes on it
//! behind a round-robin proxy.

use std::net::SocketAddr;
use std::time::Instant;

use client_sdk::{Client, FixedKey, RecordKind, StoreKey};
use serde_json::json;
use sync_protocol::automerge::ActorId;
use sync_protocol::doc;
use sync_protocol::wire::{PushDoc, SyncRequest, SyncResponse, CONTENT_TYPE};
use sync_protocol::{heads_to_wire, RecordId};
use tests::bench::{arg, entry, finalize_unless_asked, gbv_case, replicas_from_args, serve_if_child, store_from_args, ServerChild};
use tests::{proxy, rss_mb, PASSWORD};

fn main() {
    serve_if_child();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(bench(arg("--records", 1000), arg("--hold", 10_000), arg("--ingest", 100_000)));
}

/// A counter of `/metrics`, summed over the replicas.
async fn metric(addrs: &[SocketAddr], name: &str) -> u64 {
    let mut sum = 0;
    for addr in addrs {
        let text = tests::metrics_text(&format!("http://{addr}")).await.unwrap();
        sum += tests::metric_in(&text, name).unwrap_or(0);
    }
    sum
}

async fn bench(records: usize, hold: usize, ingest: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_from_args(&tmp.path().join("server"));
    let replicas = replicas_from_args(&store);
    store.seed(4);
    let form_level = finalize_unless_asked(&store);
    let servers: Vec<ServerChild> = (0..replicas).map(|_| ServerChild::spawn_on(&store)).collect();
    let metric_addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let addr = entry(&servers).await;
    eprintln!("server: {} replica(s) on {}", replicas, if matches!(store, tests::TestStore::Postgres(_)) { "PostgreSQL" } else { "sled" });
    let (paddr, counters) = proxy::start(addr).await;
    let url = format!("http://{paddr}");

    // 1. First sync of `records` new records.
    let mut phone = Client::open(tmp.path().join("phone"), FixedKey(StoreKey::random())).unwrap();
    phone.login(&url, "officer1", PASSWORD, None).await.unwrap();
    let mut save_bytes = 0usize;
    for i in 0..records {
        phone.create(RecordKind::GbvCase, &gbv_case(i)).unwrap();
        save_bytes += doc::new_record(sync_protocol::RecordKind::GbvCase, &gbv_case(i), ActorId::random()).unwrap().save().len();
    }
    counters.reset();
    let req0 = metric(&metric_addrs, "gesync_sync_requests_total").await;
    let t = Instant::now();
    let r = phone.sync(|_| {}).await.unwrap();
    let first_ms = t.elapsed().as_secs_f64() * 1000.0;
    let first_requests = metric(&metric_addrs, "gesync_sync_requests_total").await - req0;
    let first_bytes = counters.total();
    assert_eq!(r.pushed, records);
    eprintln!("first sync: {records} records, {first_requests} requests, {first_bytes} bytes, {first_ms:.0} ms");

    // 2. One-field edits.
    let ids = phone.ids(None);
    for (i, id) in ids.iter().enumerate() {
        phone.set(*id, "status", &json!(if i % 2 == 0 { "closed" } else { "open" })).unwrap();
    }
    let _ = phone.set(ids[0], "status", &json!("closed"));
    counters.reset();
    let r = phone.sync(|_| {}).await.unwrap();
    let edit_bytes = counters.total() as f64 / r.pushed.max(1) as f64;
    eprintln!("edits: {} records, {:.0} bytes per record", r.pushed, edit_bytes);

    // 3. A phone holding `hold` records reconnects with nothing new.
    for i in records..hold {
        phone.create(RecordKind::GbvCase, &gbv_case(i)).unwrap();
    }
    phone.sync(|_| {}).await.unwrap();
    counters.reset();
    let req0 = metric(&metric_addrs, "gesync_sync_requests_total").await;
    let r = phone.sync(|_| {}).await.unwrap();
    assert_eq!((r.pushed, r.pulled), (0, 0));
    let noop_bytes = counters.total();
    let noop_requests = metric(&metric_addrs, "gesync_sync_requests_total").await - req0;
    eprintln!("no-op sync holding {hold} records: {noop_requests} request(s), {noop_bytes} bytes");

    // 4. A second phone of the same commune pulls those `hold` records: the server's CPU per
    //    delivered record in bulk, where each request's fixed cost is spread over a full page.
    let cpu_server = || servers.iter().map(|s| tests::cpu_s(s.pid())).sum::<f64>();
    let mut phone2 = Client::open(tmp.path().join("phone2"), FixedKey(StoreKey::random())).unwrap();
    phone2.login(&url, "officer1", PASSWORD, None).await.unwrap();
    let req0 = metric(&metric_addrs, "gesync_sync_requests_total").await;
    let cpu0 = cpu_server();
    let r = phone2.sync(|_| {}).await.unwrap();
    let pull_cpu_us = (cpu_server() - cpu0) * 1e6 / r.pulled.max(1) as f64;
    let pull_requests = metric(&metric_addrs, "gesync_sync_requests_total").await - req0;
    assert_eq!(r.pulled, hold);
    eprintln!("bulk pull: {} records in {pull_requests} requests, server CPU {pull_cpu_us:.0} µs per delivered record", r.pulled);

    // 5. Durable ingest: 4 devices push `ingest` records in pages of 500, concurrently. The
    //    documents are made before the clock starts, so the figure is the server's. They go
    //    deflated (`save`), as older phones sent them.
    let per = ingest / 4;
    eprintln!("making {} documents for the ingest run...", per * 4);
    let bodies: Vec<Vec<SyncRequest>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(move || {
                    let actor = ActorId::random();
                    (0..per)
                        .step_by(500)
                        .map(|start| {
                            let push = (start..(start + 500).min(per))
                                .map(|i| {
                                    let mut d = doc::new_record(sync_protocol::RecordKind::GbvCase, &gbv_case(i), actor.clone()).unwrap();
                                    PushDoc { id: RecordId::random(), changes: d.save(), heads: heads_to_wire(&d.get_heads()) }
                                })
                                .collect();
                            SyncRequest { push, ..Default::default() }
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for dev in 0..4 {
        let api = tests::Api::login_from(&format!("http://{addr}"), &format!("phone{dev}"), Some(&format!("bench-{dev}"))).await;
        tokens.push(api.token);
    }
    let cpu0 = cpu_server();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (token, pages) in tokens.into_iter().zip(bodies) {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            // Each request carries the cursor of the answer before, as a phone's would: the
            // answers page only what is new, not the commune's first page every time.
            let mut cursor = Vec::new();
            for mut req in pages {
                req.cursor = std::mem::take(&mut cursor);
                let body = req.encode();
                let resp = http
                    .post(format!("http://{addr}/api/v1/sync"))
                    .bearer_auth(&token)
                    .header("content-type", CONTENT_TYPE)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                let r = SyncResponse::decode(&resp.bytes().await.unwrap()).unwrap();
                assert!(r.results.iter().all(|x| x.outcome == sync_protocol::wire::PushOutcome::Accepted));
                cursor = r.cursor;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ingest_s = t.elapsed().as_secs_f64();
    let ingest_rate = (per * 4) as f64 / ingest_s;
    let ingest_cpu_us = (cpu_server() - cpu0) * 1e6 / (per * 4) as f64;
    let rss: f64 = servers.iter().map(|s| rss_mb(s.pid())).sum();
    // Once the server has been quiet a moment, it hands freed memory back (`heap.rs`).
    tokio::time::sleep(gesync_server::heap::QUIET + std::time::Duration::from_secs(1)).await;
    let rss_idle: f64 = servers.iter().map(|s| rss_mb(s.pid())).sum();
    eprintln!("ingest: {} records in {ingest_s:.1} s ({ingest_rate:.0}/s, durable), server CPU {ingest_cpu_us:.0} µs per pushed record; server RSS {rss:.0} MiB, {rss_idle:.0} MiB once idle", per * 4);
    drop(servers);
    println!(
        "{}",
        json!({
            "form_level": form_level, "noop_sync_bytes": noop_bytes, "noop_sync_requests": noop_requests, "noop_records_held": hold,
            "first_sync_records": records, "first_sync_requests": first_requests, "first_sync_bytes": first_bytes,
            "first_sync_ms": first_ms.round(), "automerge_save_bytes": save_bytes,
            "edit_push_bytes_per_record": edit_bytes.round(), "ingest_records": per * 4,
            "ingest_records_per_s": ingest_rate.round(), "server_rss_mb": rss.round(), "server_rss_idle_mb": rss_idle.round(),
            "bulk_pull_records": hold, "bulk_pull_requests": pull_requests, "server_cpu_us": {"per_delivered_record_bulk": pull_cpu_us.round(), "per_pushed_record_ingest": ingest_cpu_us.round()},
            "store": if matches!(store, tests::TestStore::Postgres(_)) { "postgres" } else { "sled" }, "replicas": replicas,
        })
    );
}
