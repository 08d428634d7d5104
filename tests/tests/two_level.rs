//! The 2025 map with exactly the contract's commands: a province and communes directly under
//! it (no district), levels taken from the codes, an officer syncing, the province's reviewer
//! reading the commune's records.

use std::path::Path;

use client_sdk::{Client, FixedKey, RecordKind, StoreKey};
use serde_json::json;
use tests::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_gesync-server-under-test");

fn cli(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    tests::run_cli(Path::new(BIN), args, stdin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_level_province_works_with_the_contracts_commands_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let d = data.to_str().unwrap();
    for args in [
        vec!["admin", "add-org-unit", "--data-dir", d, "--code", "04", "--name", "Tỉnh Cao Bằng"],
        vec!["admin", "add-org-unit", "--data-dir", d, "--code", "04702", "--name", "Xã Đàm Thủy", "--parent", "04"],
    ] {
        let r = cli(&args, None);
        assert!(r.status.success(), "{args:?}: {}", String::from_utf8_lossy(&r.stderr));
    }
    // A code whose length says no level needs one, with one clear line.
    let r = cli(&["admin", "add-org-unit", "--data-dir", d, "--code", "0470", "--name", "X", "--parent", "04"], None);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.lines().count() == 1 && err.contains("--level"), "{err}");
    for (user, role, unit) in [("xa.damthuy", "commune_officer", "04702"), ("tinh.review", "district_staff", "04")] {
        let r = cli(&["admin", "create-user", "--data-dir", d, "--username", user, "--role", role, "--org-unit", unit, "--password-stdin"], Some("a-long-password-2026\n"));
        assert!(r.status.success(), "{user}: {}", String::from_utf8_lossy(&r.stderr));
    }
    let server = ServerProcess::spawn(Path::new(BIN), &data);
    let mut phone = Client::open(dir.path().join("phone"), FixedKey(StoreKey::random())).unwrap();
    phone.login(&server.url(), "xa.damthuy", "a-long-password-2026", None).await.unwrap();
    let id = phone
        .create(RecordKind::GbvCase, &json!({"commune": "04702", "detected_on": "2025-10-02", "victim": {"sex": "female", "birth_year": 1988}}))
        .unwrap();
    let report = phone.sync(|_| {}).await.unwrap();
    assert_eq!((report.pushed, report.rejected), (1, 0), "{:?}", phone.show(id).unwrap());
    // The reviewer of the province (the level above its communes) reads the commune's records.
    let mut reviewer = Client::open(dir.path().join("reviewer"), FixedKey(StoreKey::random())).unwrap();
    reviewer.login(&server.url(), "tinh.review", "a-long-password-2026", None).await.unwrap();
    assert_eq!(reviewer.sync(|_| {}).await.unwrap().pulled, 1);
    // Figures and the report on the two-level map: the commune, then the province.
    let api = tests::Api::login_with(&server.url(), "tinh.review", "a-long-password-2026").await;
    for unit in ["04702", "04"] {
        let (s, f) = api.get(&format!("/api/v1/indicators?org_unit={unit}&period=2025Q4")).await;
        assert_eq!(s, 200, "{f}");
        let gbv = f["indicators"].as_array().unwrap().iter().find(|i| i["id"] == "gbv_victims_supported").unwrap().clone();
        assert_eq!((gbv["numerator"].as_i64(), gbv["denominator"].as_i64()), (Some(0), Some(1)), "{unit}: {gbv}");
    }
    let csv = api.get_text("/api/v1/reports/04/2025Q4.csv").await;
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows[0].starts_with("04702,Xã Đàm Thủy,Xã,") && rows[1].starts_with("04,Tỉnh Cao Bằng,Tỉnh,"), "{csv}");
    let (s, conflicts) = api.get("/api/v1/conflicts?org_unit=04").await;
    assert_eq!((s, conflicts.as_array().map(Vec::len)), (200, Some(0)), "{conflicts}");
    server.kill();
}
