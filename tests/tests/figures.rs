//! The server's materialized figures: current after every sync, equal to a rebuild from the
//! records, and served as JSON and as an Excel-friendly CSV.

use client_sdk::{Client, FixedKey, RecordKind, StoreKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tests::{seed_from_env, Api, TestServer, PASSWORD};

fn indicator<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["indicators"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_follow_edits_and_equal_a_rebuild() {
    let seed = seed_from_env("figures_follow_edits_and_equal_a_rebuild");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let server = TestServer::start_fresh(&data, 0).await;
    let url = server.url();
    let mut phone = Client::open(dir.path().join("p"), FixedKey(StoreKey::random())).unwrap();
    phone.login(&url, "officer1", PASSWORD, None).await.unwrap();

    // One victim reached by a service, one not: 1/2 in 2025Q1.
    let a = phone.create(RecordKind::GbvCase, &json!({"commune": "04701", "detected_on": "2025-02-01",
        "services": [{"kind": "health"}], "perpetrator": {"detected": true, "prosecuted": false, "counselled": true}})).unwrap();
    let b = phone.create(RecordKind::GbvCase, &json!({"commune": "04701", "detected_on": "2025-03-01"})).unwrap();
    phone.sync(|_| {}).await.unwrap();
    let district = Api::login(&url, "district").await;
    let (_, r) = district.get("/api/v1/indicators?org_unit=047&period=2025Q1").await;
    let g = indicator(&r, "gbv_victims_supported");
    assert_eq!((g["numerator"].as_i64(), g["denominator"].as_i64()), (Some(1), Some(2)));
    assert_eq!(g["value"], json!(0.5));
    assert_eq!(g["target"], json!(0.8));
    assert_eq!(g["met"], json!(false));
    let p = indicator(&r, "perpetrators_counselled");
    assert_eq!((p["numerator"].as_i64(), p["denominator"].as_i64()), (Some(1), Some(1)));
    let t = indicator(&r, "trafficking_returnees_supported");
    assert_eq!((t["denominator"].as_i64(), &t["value"], &t["met"]), (Some(0), &Value::Null, &Value::Null));

    // The second victim gets a service and moves to Q2; the first is deleted.
    phone.append(b, "services", &json!({"kind": "legal_aid"})).unwrap();
    phone.set(b, "detected_on", &json!("2025-04-02")).unwrap();
    phone.delete(a, "nhập nhầm").unwrap();
    phone.sync(|_| {}).await.unwrap();
    let (_, q1) = district.get("/api/v1/indicators?org_unit=04&period=2025Q1").await;
    assert_eq!(q1.get("error").map(|e| e["code"].clone()), Some(json!("forbidden")), "district staff cannot read the province");
    let admin = Api::login(&url, "admin").await;
    let (_, q1) = admin.get("/api/v1/indicators?org_unit=04&period=2025Q1").await;
    assert_eq!(indicator(&q1, "gbv_victims_supported")["denominator"], 0);
    let (_, q2) = admin.get("/api/v1/indicators?org_unit=04&period=2025S1").await;
    assert_eq!(indicator(&q2, "gbv_victims_supported")["numerator"], 1);
    assert_eq!(indicator(&q2, "gbv_victims_supported")["denominator"], 1);

    // Random further history, then compare the incremental counters with a rebuild.
    for i in 0..40 {
        let month = rng.gen_range(1..=12);
        match rng.gen_range(0..4) {
            0 => {
                phone.create(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": format!("2025-{month:02}-10")})).unwrap();
            }
            1 => {
                phone.create(RecordKind::TraffickingReturnee, &json!({"commune": "04701", "identified_on": format!("2024-{month:02}-03"), "needs_support": rng.gen_bool(0.5)})).unwrap();
            }
            _ => {
                let ids = phone.ids(Some(RecordKind::GbvCase));
                let id = ids[rng.gen_range(0..ids.len())];
                let _ = phone.set(id, "perpetrator.detected", &json!(rng.gen_bool(0.5)));
                let _ = phone.set(id, "detected_on", &json!(format!("202{}-{month:02}-0{}", rng.gen_range(4..6), 1 + i % 9)));
            }
        }
        if i % 7 == 0 {
            phone.sync(|_| {}).await.unwrap();
        }
    }
    phone.sync(|_| {}).await.unwrap();

    // CSV: BOM, Vietnamese headers, one row per commune then the district.
    let csv = reqwest::Client::new().get(format!("{url}/api/v1/reports/047/2025.csv")).bearer_auth(&district.token).send().await.unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let body = csv.bytes().await.unwrap();
    assert!(body.starts_with(b"\xEF\xBB\xBF"), "UTF-8 BOM for Excel");
    let text = String::from_utf8(body[3..].to_vec()).unwrap();
    let codes: Vec<&str> = text.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(codes, ["04701", "04702", "047"]);
    assert!(text.lines().next().unwrap().contains("tử số"));
    server.stop().await;

    let db = gesync_server::open_db(&data).unwrap();
    let incremental = db.figures().all_counters().unwrap();
    assert!(!incremental.is_empty());
    db.rebuild_figures().unwrap();
    assert_eq!(db.figures().all_counters().unwrap(), incremental, "incremental figures differ from a rebuild (seed {seed})");
}
