//! Acknowledged means durable: the server process is SIGKILLed right after it acknowledged a
//! batch, then restarted on the same store; every acknowledged change is there. On the embedded
//! store and on PostgreSQL.

use std::collections::BTreeMap;
use std::path::Path;

use client_sdk::{Client, FixedKey, RecordKind, StoreKey, SyncStatus};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tests::{seed_from_env, Api, ServerProcess, TestStore, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_gesync-server-under-test");

async fn views(url: &str) -> BTreeMap<String, Value> {
    let (_, list) = Api::login(url, "district").await.get("/api/v1/records?org_unit=04701").await;
    list.as_array().unwrap().iter().map(|v| (v["id"].as_str().unwrap().to_string(), v.clone())).collect()
}

fn local_views(c: &Client) -> BTreeMap<String, Value> {
    c.list(None)
        .unwrap()
        .into_iter()
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            o.remove("sync_status");
            o.insert("conflicts".into(), json!([]));
            (o["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_an_ack_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_after_acks(TestStore::Embedded(dir.path().join("server")), dir.path(), "sigkill_right_after_an_ack_loses_nothing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_an_ack_loses_nothing_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_after_acks(TestStore::postgres(), dir.path(), "sigkill_right_after_an_ack_loses_nothing_on_postgres").await;
}

async fn sigkill_after_acks(store: TestStore, dir: &Path, name: &str) {
    let seed = seed_from_env(name);
    let mut rng = StdRng::seed_from_u64(seed);
    store.seed(0);
    let mut phone = Client::open(dir.join("phone"), FixedKey(StoreKey::random())).unwrap();
    let mut server = ServerProcess::spawn_on(Path::new(BIN), &store);
    phone.login(&server.url(), "officer1", PASSWORD, None).await.unwrap();
    for round in 0..6 {
        for _ in 0..rng.gen_range(1..20) {
            phone
                .create(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-05-01", "title": format!("r{round}")}))
                .unwrap();
        }
        let ids = phone.ids(None);
        let id = ids[rng.gen_range(0..ids.len())];
        phone.set(id, "title", &json!(format!("edited in round {round}"))).unwrap();
        let report = phone.sync(|_| {}).await.unwrap();
        assert_eq!(report.rejected, 0);
        assert_eq!(phone.pending_count(), 0, "everything acknowledged");
        // Acknowledged: kill at once, no graceful shutdown.
        server.kill();
        server = ServerProcess::spawn_on(Path::new(BIN), &store);
        let on_server = views(&server.url()).await;
        assert_eq!(on_server, local_views(&phone), "round {round}: acknowledged changes lost (seed {seed})");
        // The restarted server has a new port: the phone logs in again, which makes it push
        // everything once more. The retry is idempotent: nothing doubles.
        phone.login(&server.url(), "officer1", PASSWORD, None).await.unwrap();
        phone.sync(|_| {}).await.unwrap();
        assert!(phone.ids(None).iter().all(|i| phone.status(*i).unwrap() == SyncStatus::Synced));
        assert_eq!(views(&server.url()).await, local_views(&phone), "round {round}: a retried push changed the server");
    }
    server.kill();
}
