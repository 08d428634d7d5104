//! Review by district staff: conflicts with provenance and their resolution, possible
//! duplicates, approval of a period — against the real server and real phones.

use std::path::Path;

use client_sdk::{Client, FixedKey, RecordKind, RecordId, StoreKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sync_protocol::wire::{PushDoc, PushOutcome, SyncRequest, SyncResponse, CONTENT_TYPE};
use tests::{seed_from_env, Api, TestServer, PASSWORD};

fn phone(dir: &Path, name: &str) -> Client {
    Client::open(dir.join(name), FixedKey(StoreKey::random())).unwrap()
}

async fn conflicts(district: &Api) -> Vec<Value> {
    let (s, v) = district.get("/api/v1/conflicts?org_unit=047").await;
    assert_eq!(s, 200, "{v}");
    v.as_array().unwrap().clone()
}

fn case() -> Value {
    json!({"commune": "04701", "detected_on": "2025-03-01", "victim": {"sex": "female", "birth_year": 1990},
           "services": [{"kind": "health", "provider": "TYT"}]})
}

async fn sync(c: &mut Client) {
    c.sync(|_| {}).await.unwrap();
}

/// Two officers with one shared record, both synced.
async fn two_phones(dir: &Path, url: &str) -> (Client, Client, RecordId) {
    let mut a = phone(dir, "a");
    let mut b = phone(dir, "b");
    a.login(url, "officer1", PASSWORD, None).await.unwrap();
    b.login(url, "officer1b", PASSWORD, None).await.unwrap();
    let id = a.create(RecordKind::GbvCase, &case()).unwrap();
    sync(&mut a).await;
    sync(&mut b).await;
    (a, b, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_of_one_field_become_one_conflict_that_a_district_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("s"), 0).await;
    let url = server.url();
    let (mut a, mut b, id) = two_phones(dir.path(), &url).await;
    a.set(id, "victim.sex", &json!("male")).unwrap();
    b.set(id, "victim.sex", &json!("other")).unwrap();
    // Inside a list entry too.
    a.set(id, "services.0.provider", &json!("Trạm y tế")).unwrap();
    b.set(id, "services.0.provider", &json!("Công an xã")).unwrap();
    // Concurrent appends: both kept, no conflict.
    a.append(id, "services", &json!({"kind": "legal_aid"})).unwrap();
    b.append(id, "services", &json!({"kind": "psychosocial"})).unwrap();
    sync(&mut a).await;
    sync(&mut b).await;
    sync(&mut a).await;
    assert_eq!(a.show(id).unwrap()["services"].as_array().unwrap().len(), 3);
    assert_eq!(a.show(id).unwrap()["conflicts"].as_array().unwrap().len(), 2, "phones show conflicts until resolved");

    let district = Api::login(&url, "district").await;
    let queue = conflicts(&district).await;
    let paths: Vec<&str> = queue.iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["victim.sex", "services.0.provider"]);
    let sex = &queue[0];
    let mut values: Vec<(String, String)> = sex["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["value"].as_str().unwrap().to_string(), v["user"].as_str().unwrap().to_string()))
        .collect();
    values.sort();
    assert_eq!(values, [("male".to_string(), "officer1".to_string()), ("other".to_string(), "officer1b".to_string())]);
    for v in sex["values"].as_array().unwrap() {
        assert!(v["device_id"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(v["at"].as_str().unwrap().starts_with("20"), "a real time: {}", v["at"]);
    }

    // Officers see none of the queue and may not resolve.
    let officer = Api::login(&url, "officer1").await;
    assert_eq!(officer.get("/api/v1/conflicts?org_unit=04701").await.0, 403);
    let cid = sex["id"].as_str().unwrap();
    assert_eq!(officer.post(&format!("/api/v1/conflicts/{cid}/resolve"), json!({"value": "male"})).await.0, 403);
    // A value that the schema refuses.
    assert_eq!(district.post(&format!("/api/v1/conflicts/{cid}/resolve"), json!({"value": "femal"})).await.0, 400);

    // Resolve both: keep a competing value, and enter a new one.
    assert_eq!(district.post(&format!("/api/v1/conflicts/{cid}/resolve"), json!({"value": "male"})).await.0, 204);
    let pid = queue[1]["id"].as_str().unwrap();
    assert_eq!(district.post(&format!("/api/v1/conflicts/{pid}/resolve"), json!({"value": "Trạm y tế xã"})).await.0, 204);
    assert!(conflicts(&district).await.is_empty());
    assert_eq!(district.post(&format!("/api/v1/conflicts/{cid}/resolve"), json!({"value": "male"})).await.0, 404, "already resolved");

    sync(&mut a).await;
    sync(&mut b).await;
    for p in [&a, &b] {
        let v = p.show(id).unwrap();
        assert_eq!(v["victim"]["sex"], "male");
        assert_eq!(v["services"][0]["provider"], "Trạm y tế xã");
        assert!(v.get("conflicts").is_none(), "conflict gone on the phone: {v}");
    }
    let (_, audit) = Api::login(&url, "admin").await.get("/api/v1/audit").await;
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "conflict_resolve" && e["user"] == "district"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_concurrent_with_a_delete_is_a_conflict_on_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("s"), 0).await;
    let url = server.url();
    let (mut a, mut b, id) = two_phones(dir.path(), &url).await;
    a.delete(id, "nhập nhầm").unwrap();
    b.set(id, "status", &json!("closed")).unwrap();
    sync(&mut a).await;
    sync(&mut b).await;
    let district = Api::login(&url, "district").await;
    let queue = conflicts(&district).await;
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0]["path"], "deleted");
    let users: Vec<(&Value, &str)> = queue[0]["values"].as_array().unwrap().iter().map(|v| (&v["value"], v["user"].as_str().unwrap())).collect();
    assert!(users.contains(&(&json!(true), "officer1")) && users.contains(&(&json!(false), "officer1b")), "{users:?}");
    // Keep the record (undelete): the figures count it again.
    let cid = queue[0]["id"].as_str().unwrap();
    assert_eq!(district.post(&format!("/api/v1/conflicts/{cid}/resolve"), json!({"value": false})).await.0, 204);
    assert!(conflicts(&district).await.is_empty());
    let (_, fig) = district.get("/api/v1/indicators?org_unit=047&period=2025").await;
    assert_eq!(fig["indicators"][0]["denominator"], 1);
    sync(&mut a).await;
    assert_eq!(a.show(id).unwrap()["deleted"], false);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_claiming_another_devices_actor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("s"), 0).await;
    let url = server.url();
    let (a, _b, existing) = two_phones(dir.path(), &url).await;
    // officer1b forges a record with officer1's phone's actor.
    let stolen = a.store().actor().clone();
    let mut forged = sync_protocol::doc::new_record(sync_protocol::RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-01-01"}), stolen).unwrap();
    let forger = Api::login_from(&url, "officer1b", Some("forger")).await;
    let req = SyncRequest {
        push: vec![PushDoc { id: RecordId::random(), changes: forged.save(), heads: sync_protocol::heads_to_wire(&forged.get_heads()) }],
        ..Default::default()
    };
    let body = reqwest::Client::new()
        .post(format!("{url}/api/v1/sync"))
        .bearer_auth(&forger.token)
        .header("content-type", CONTENT_TYPE)
        .body(req.encode())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let resp = SyncResponse::decode(&body).unwrap();
    match &resp.results[0].outcome {
        PushOutcome::Rejected { reason } => assert!(reason.contains("another device"), "{reason}"),
        o => panic!("expected a refusal, got {o:?}"),
    }
    // The forged record was not stored: the forger's pull holds only the record that existed.
    let pulled: Vec<RecordId> = resp.pull.iter().map(|p| p.id).collect();
    assert_eq!(pulled, [existing]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_flagged_dismissed_and_merged_and_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("s"), 0).await;
    let url = server.url();
    let mut a = phone(dir.path(), "a");
    let mut b = phone(dir.path(), "b");
    a.login(&url, "officer1", PASSWORD, None).await.unwrap();
    b.login(&url, "officer1b", PASSWORD, None).await.unwrap();
    let victim = |date: &str, svc: &str| json!({"commune": "04701", "detected_on": date, "victim": {"sex": "female", "birth_year": 1985}, "services": [{"kind": svc}]});
    let x = a.create(RecordKind::GbvCase, &victim("2025-05-01", "health")).unwrap();
    let y = b.create(RecordKind::GbvCase, &victim("2025-05-10", "legal_aid")).unwrap();
    // Same person, but 20 days apart: not flagged. Another birth year: not flagged.
    b.create(RecordKind::GbvCase, &victim("2025-05-30", "health")).unwrap();
    b.create(RecordKind::GbvCase, &json!({"commune": "04701", "detected_on": "2025-05-02", "victim": {"sex": "female", "birth_year": 1986}})).unwrap();
    // Dismissed pair.
    let p = a.create(RecordKind::TraffickingReturnee, &json!({"commune": "04701", "identified_on": "2025-06-01", "sex": "female", "birth_year": 2000})).unwrap();
    let q = b.create(RecordKind::TraffickingReturnee, &json!({"commune": "04701", "identified_on": "2025-06-03", "sex": "female", "birth_year": 2000})).unwrap();
    sync(&mut a).await;
    sync(&mut b).await;
    let district = Api::login(&url, "district").await;
    let (s, pairs) = district.get("/api/v1/duplicates?org_unit=047").await;
    assert_eq!(s, 200);
    let mut ids: Vec<String> = pairs.as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    let pair = |m: RecordId, n: RecordId| if m < n { format!("{m}~{n}") } else { format!("{n}~{m}") };
    let mut want = vec![pair(x, y), pair(p, q)];
    want.sort();
    assert_eq!(ids, want);
    let (_, before) = district.get("/api/v1/indicators?org_unit=047&period=2025Q2").await;
    assert_eq!(before["indicators"][0]["denominator"], 4);

    assert_eq!(district.post(&format!("/api/v1/duplicates/{}/not-duplicate", pair(p, q)), json!(null)).await.0, 204);
    assert_eq!(district.post(&format!("/api/v1/duplicates/{}/merge", pair(x, y)), json!({"keep": x.to_string()})).await.0, 204);
    let (_, pairs) = district.get("/api/v1/duplicates?org_unit=047").await;
    assert!(pairs.as_array().unwrap().is_empty(), "{pairs}");
    let (_, after) = district.get("/api/v1/indicators?org_unit=047&period=2025Q2").await;
    assert_eq!(after["indicators"][0]["denominator"], 3, "the merged victim counts once");

    sync(&mut a).await;
    sync(&mut b).await;
    let kept = b.show(x).unwrap();
    let kinds: Vec<&str> = kept["services"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["health", "legal_aid"]);
    let gone = a.show(y).unwrap();
    assert_eq!(gone["deleted"], true);
    assert_eq!(gone["deleted_reason"], format!("duplicate of {x}"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_waits_for_conflicts_and_is_flagged_by_a_late_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("s"), 0).await;
    let url = server.url();
    let (mut a, mut b, id) = two_phones(dir.path(), &url).await;
    a.set(id, "status", &json!("open")).unwrap();
    b.set(id, "status", &json!("closed")).unwrap();
    sync(&mut a).await;
    sync(&mut b).await;
    let district = Api::login(&url, "district").await;
    let (s, e) = district.post("/api/v1/approvals", json!({"org_unit": "047", "period": "2025"})).await;
    assert_eq!(s, 409, "blocked while a conflict is open: {e}");
    let cid = conflicts(&district).await[0]["id"].as_str().unwrap().to_string();
    district.post(&format!("/api/v1/conflicts/{cid}/resolve"), json!({"value": "closed"})).await;
    let (s, approval) = district.post("/api/v1/approvals", json!({"org_unit": "047", "period": "2025"})).await;
    assert_eq!(s, 201, "{approval}");
    assert_eq!(approval["approved_by"], "district");
    assert_eq!(approval["figures"]["indicators"][0]["denominator"], 1);

    // A late change in the approved period: accepted, and the approval is flagged.
    sync(&mut a).await;
    a.create(RecordKind::GbvCase, &json!({"commune": "04701", "detected_on": "2025-08-01"})).unwrap();
    let r = a.sync(|_| {}).await.unwrap();
    assert_eq!(r.pushed, 1);
    let province = Api::login(&url, "province").await;
    let (s, list) = province.get("/api/v1/approvals?org_unit=04").await;
    assert_eq!(s, 200);
    let ap = &list.as_array().unwrap()[0];
    assert_eq!(ap["org_unit"], "047");
    assert_eq!(ap["changed_since_approval"], true);
    assert_eq!(ap["figures"]["indicators"][0]["denominator"], 1, "the approved figures stay readable");
    assert_eq!(ap["current_figures"]["indicators"][0]["denominator"], 2);
    // A change outside the period does not flag another period's approval.
    let (s, _) = district.post("/api/v1/approvals", json!({"org_unit": "047", "period": "2024"})).await;
    assert_eq!(s, 201);
    a.create(RecordKind::NewsItem, &json!({"commune": "04701", "published_on": "2025-09-01"})).unwrap();
    sync(&mut a).await;
    let (_, list) = province.get("/api/v1/approvals?org_unit=04&period=2024").await;
    assert_eq!(list[0]["changed_since_approval"], false);
    server.stop().await;
}

/// Issue 5's simulation: many phones make random concurrent edits, sync; district staff
/// resolve every conflict; sync again: every replica is identical and no conflict is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_every_conflict_resolved_every_replica_identical() {
    let seed = seed_from_env("simulation_every_conflict_resolved_every_replica_identical");
    let mut rng = StdRng::seed_from_u64(seed);
    const PHONES: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_fresh(&dir.path().join("s"), PHONES).await;
    let url = server.url();
    let mut phones = Vec::new();
    for i in 0..PHONES {
        let mut p = phone(dir.path(), &format!("p{i}"));
        p.login(&url, &format!("phone{i}"), PASSWORD, None).await.unwrap();
        phones.push(p);
    }
    for _ in 0..4 {
        phones[0].create(RecordKind::GbvCase, &case()).unwrap();
    }
    for p in phones.iter_mut() {
        sync(p).await;
    }
    let sexes = ["female", "male", "other", "unknown"];
    for _round in 0..3 {
        for p in phones.iter_mut() {
            let ids = p.ids(None);
            for _ in 0..rng.gen_range(1..4) {
                let id = ids[rng.gen_range(0..ids.len())];
                match rng.gen_range(0..4) {
                    0 => p.set(id, "victim.sex", &json!(sexes[rng.gen_range(0..4)])).unwrap(),
                    1 => p.set(id, "services.0.provider", &json!(format!("P{}", rng.gen_range(0..3)))).unwrap(),
                    2 => p.append(id, "services", &json!({"kind": "health"})).unwrap(),
                    _ => p.set(id, "status", &json!(if rng.gen_bool(0.5) { "open" } else { "closed" })).unwrap(),
                }
            }
        }
        for p in phones.iter_mut() {
            sync(p).await;
        }
    }
    let district = Api::login(&url, "district").await;
    for c in conflicts(&district).await {
        let pick = c["values"][rng.gen_range(0..c["values"].as_array().unwrap().len())]["value"].clone();
        let (s, e) = district.post(&format!("/api/v1/conflicts/{}/resolve", c["id"].as_str().unwrap()), json!({"value": pick})).await;
        assert_eq!(s, 204, "{e} (seed {seed})");
    }
    assert!(conflicts(&district).await.is_empty(), "seed {seed}");
    for p in phones.iter_mut() {
        sync(p).await;
    }
    let strip = |c: &Client| -> Vec<Value> {
        c.list(None).unwrap().into_iter().map(|mut v| {
            v.as_object_mut().unwrap().remove("sync_status");
            v
        }).collect()
    };
    let reference = strip(&phones[0]);
    assert!(reference.iter().all(|v| v.get("conflicts").is_none()), "no conflict left (seed {seed})");
    for (i, p) in phones.iter().enumerate() {
        assert_eq!(strip(p), reference, "phone {i} differs (seed {seed})");
    }
    server.stop().await;
}
