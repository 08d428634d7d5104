//! The real HTTP transport, over plain HTTP and over TLS with a self-signed certificate, against
//! a small axum app that puts the fake server of `common/` behind the HTTP API of `contract.md`.

mod common;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use client_sdk::{
    Client, Error, FixedKey, LoginRequest, RecordKind, StoreKey, Transport, TransportError,
};
use common::{FakeServer, PASSWORD};
use serde_json::{json, Value};

fn failure(e: TransportError) -> Response {
    match e {
        TransportError::Status {
            status,
            code,
            message,
            retry_after,
        } => {
            let mut r = (
                StatusCode::from_u16(status).unwrap(),
                Json(json!({"error": {"code": code, "message": message}})),
            )
                .into_response();
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, s.to_string().parse().unwrap());
            }
            r
        }
        other => (StatusCode::INTERNAL_SERVER_ERROR, other.to_string()).into_response(),
    }
}

async fn login(State(fake): State<Arc<FakeServer>>, Json(body): Json<Value>) -> Response {
    let req = LoginRequest {
        username: body["username"].as_str().unwrap_or_default().into(),
        password: body["password"].as_str().unwrap_or_default().into(),
        device_id: body["device_id"]
            .as_str()
            .expect("the SDK sends its device id")
            .into(),
    };
    match fake.login(&req).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => failure(e),
    }
}

async fn refresh(State(fake): State<Arc<FakeServer>>, Json(body): Json<Value>) -> Response {
    match fake
        .refresh(body["refresh_token"].as_str().unwrap_or_default())
        .await
    {
        Ok(t) => Json(t).into_response(),
        Err(e) => failure(e),
    }
}

async fn sync(State(fake): State<Arc<FakeServer>>, headers: HeaderMap, body: Bytes) -> Response {
    assert_eq!(
        headers[header::CONTENT_TYPE],
        sync_protocol::wire::CONTENT_TYPE
    );
    let token = headers[header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    match fake.sync(&token, body.to_vec()).await {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, sync_protocol::wire::CONTENT_TYPE)],
            bytes,
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

fn app(fake: Arc<FakeServer>) -> Router {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/sync", post(sync))
        .with_state(fake)
}

async fn serve_plain(fake: Arc<FakeServer>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(fake)).await.unwrap() });
    format!("http://{addr}")
}

/// Serves over TLS with a fresh self-signed certificate; returns the URL and the certificate PEM.
async fn serve_tls(fake: Arc<FakeServer>) -> (String, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert_pem.clone().into_bytes(),
        key_pem.into_bytes(),
    )
    .await
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, config)
            .serve(app(fake).into_make_service())
            .await
            .unwrap()
    });
    (format!("https://localhost:{port}"), cert_pem)
}

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

#[test]
fn the_cli_logs_in_and_syncs() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = Arc::new(FakeServer::new());
    let (url, pem) = rt.block_on(serve_tls(fake.clone()));
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("server.pem");
    std::fs::write(&pem_path, pem).unwrap();
    let store = dir.path().join("store");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gesync-field"))
            .arg("--store")
            .arg(&store)
            .args(args)
            .env("GESYNC_KEY_DIR", dir.path().join("keys"))
            .env_remove("GESYNC_STORE_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(
        &[
            "login",
            "--server",
            &url,
            "--username",
            "officer",
            "--password-stdin",
            "--ca-cert",
            pem_path.to_str().unwrap(),
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        !shown.contains(PASSWORD) && !shown.contains("access-"),
        "{shown}"
    );
    let out = run(
        &["new", "news_item", "--json", "-"],
        r#"{"commune":"04712","published_on":"2025-01-05"}"#,
    );
    assert!(out.status.success());
    let out = run(&["sync"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report,
        json!({"pushed": 1, "pulled": 0, "conflicts": 0, "rejected": 0})
    );
    assert!(
        out.stderr.is_empty(),
        "no progress bar when stderr is not a terminal"
    );

    fake.with(|s| {
        s.expire_next = true;
        s.refresh_broken = true;
    });
    let out = run(&["sync"], "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: session expired: run `gesync-field login` again\n"
    );
    assert!(!out.status.success());
}
