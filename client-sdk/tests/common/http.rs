//! The fake server of `common/` behind the HTTP API of `contract.md`, as a small axum app, over
//! plain HTTP or TLS with a self-signed certificate.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use client_sdk::{LoginRequest, Transport, TransportError};
use serde_json::{json, Value};

use super::FakeServer;

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
        device_proof: body["device_proof"].as_str().map(Into::into),
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

pub fn app(fake: Arc<FakeServer>) -> Router {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/sync", post(sync))
        .with_state(fake)
}

pub async fn serve_plain(fake: Arc<FakeServer>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(fake)).await.unwrap() });
    format!("http://{addr}")
}

/// Serves over TLS with a fresh self-signed certificate; returns the URL and the certificate PEM.
pub async fn serve_tls(fake: Arc<FakeServer>) -> (String, String) {
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

