//! The real HTTP transport, over plain HTTP and over TLS with a self-signed certificate, against
//! a small axum app that puts the fake server of `common/` behind the HTTP API of `contract.md`.

mod common;

use std::sync::Arc;

use client_sdk::{Client, Error, FixedKey, RecordKind, StoreKey};
use common::http::{serve_plain, serve_tls};
use common::{FakeServer, PASSWORD};
use serde_json::{json, Value};

fn case() -> Value {
    json!({"commune": "04712", "detected_on": "2025-03-01", "notes": "n"})
}

#[tokio::test]
async fn login_push_and_pull_over_plain_http() {
    let fake = Arc::new(FakeServer::new());
    let url = serve_plain(fake.clone()).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = || FixedKey(StoreKey::from_bytes([1; 32]));
    let mut a = Client::open(da.path(), key()).unwrap();
    let err = a.login(&url, "officer", "wrong", None).await.unwrap_err();
    assert_eq!(err.to_string(), "login refused: wrong username or password");
    a.login(&url, "officer", PASSWORD, None).await.unwrap();
    let id = a.create(RecordKind::GbvCase, &case()).unwrap();
    assert_eq!(a.sync(|_| {}).await.unwrap().pushed, 1);
    fake.with(|s| s.expire_next = true);
    a.set(id, "status", &json!("closed")).unwrap();
    assert_eq!(
        a.sync(|_| {}).await.unwrap().pushed,
        1,
        "refreshed and retried"
    );

    let mut b = Client::open(db.path(), key()).unwrap();
    b.login(&format!("{url}/"), "officer", PASSWORD, None)
        .await
        .unwrap();
    let r = b.sync(|_| {}).await.unwrap();
    assert_eq!(r.pulled, 1);
    assert_eq!(b.show(id).unwrap()["status"], "closed");

    fake.with(|s| s.throttle_login = true);
    let err = b.login(&url, "officer", PASSWORD, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "too many attempts: the server asks to wait 30 seconds"
    );

    fake.with(|s| s.revoked = true);
    let err = b.sync(|_| {}).await.unwrap_err();
    assert!(matches!(err, Error::DeviceRevoked), "{err}");
    assert_eq!(std::fs::read_dir(db.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn tls_with_the_servers_certificate_and_without() {
    let fake = Arc::new(FakeServer::new());
    let (url, pem) = serve_tls(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("server.pem");
    std::fs::write(&pem_path, pem).unwrap();
    let mut a = Client::open(
        dir.path().join("store"),
        FixedKey(StoreKey::from_bytes([1; 32])),
    )
    .unwrap();
    let err = a.login(&url, "officer", PASSWORD, None).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot reach the server at {url}")),
        "{text}"
    );
    assert!(text.contains("--ca-cert"), "{text}");
    a.login(&url, "officer", PASSWORD, Some(&pem_path))
        .await
        .unwrap();
    a.create(RecordKind::GbvCase, &case()).unwrap();
    assert_eq!(a.sync(|_| {}).await.unwrap().pushed, 1);
    // A later sync uses the certificate path kept in the store.
    let mut again = Client::open(
        dir.path().join("store"),
        FixedKey(StoreKey::from_bytes([1; 32])),
    )
    .unwrap();
    again.create(RecordKind::GbvCase, &case()).unwrap();
    assert_eq!(again.sync(|_| {}).await.unwrap().pushed, 1);
    assert_eq!(fake.record_count(), 2);

    let not_pem = dir.path().join("x.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let err = a
        .login(&url, "officer", PASSWORD, Some(&not_pem))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("PEM"), "{err}");
}
