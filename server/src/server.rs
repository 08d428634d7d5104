//! Configuration, TLS, and launching the HTTP server on a listener (so tests bind port 0 and
//! drive the real server through the real client).

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::api::{self, AppState, Shared};
use crate::conn::{GuardedAcceptor, Limits};
use crate::db::Db;
pub use crate::store::Storage;
use crate::store::{PgKv, SledKv};

impl Storage {
    /// Opens the store and the data layer on it. Fails closed on a damaged store.
    pub fn open(&self) -> Result<crate::db::Db, String> {
        match self {
            Storage::Embedded(dir) => open_db(dir),
            Storage::Postgres(config) => {
                let kv = PgKv::open(config).map_err(|e| e.to_string())?;
                Db::open(Box::new(kv)).map_err(|e| e.to_string())
            }
        }
    }
}

/// The server's settings: defaults in code, `GESYNC_*` environment variables override them,
/// command-line flags win (clap's `env` attribute implements exactly that order).
#[derive(Clone)]
pub struct Config {
    pub storage: Storage,
    pub listen: SocketAddr,
    pub tls: Option<Tls>,
    pub limits: Limits,
    /// Reverse proxies (load balancers) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The monitoring system's bearer token for `/metrics` (a secret: not in `Debug`).
    pub metrics_token: Option<String>,
    /// Where each signed audit checkpoint is also written (`--audit-witness`).
    pub audit_witness: Option<PathBuf>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key paths are not secrets, but their contents are: never print PEM data.
        f.debug_struct("Config").field("storage", &self.storage).field("listen", &self.listen).field("tls", &self.tls.is_some()).field("limits", &self.limits).field("trusted_proxies", &self.trusted_proxies).field("metrics_token", &self.metrics_token.is_some()).field("audit_witness", &self.audit_witness).finish()
    }
}

/// PEM certificate chain and private key files.
#[derive(Clone, Debug)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Opens the sled store in `dir` and the data layer on it. Fails closed on a damaged store.
pub fn open_db(dir: &Path) -> Result<Db, String> {
    let kv = SledKv::open(dir).map_err(|e| e.to_string())?;
    Db::open(Box::new(kv)).map_err(|e| {
        format!("the store in {} is damaged ({e}); restore it from a backup with `gesync-server restore --data-dir DIR --from FILE`", dir.display())
    })
}

/// Installs the ring crypto provider for rustls (once per process).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Makes a self-signed certificate for `localhost` and the loopback addresses in `dir`, unless
/// one is already there. Returns the paths and the SHA-256 fingerprint of the certificate.
pub fn ensure_self_signed(dir: &Path, extra_names: &[String]) -> Result<(Tls, String), String> {
    let cert = dir.join("tls-cert.pem");
    let key = dir.join("tls-key.pem");
    if !cert.exists() || !key.exists() {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        names.extend(extra_names.iter().cloned());
        let ck = rcgen::generate_simple_self_signed(names).map_err(|e| format!("cannot make a certificate: {e}"))?;
        std::fs::write(&cert, ck.cert.pem()).map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
        write_private(&key, ck.signing_key.serialize_pem().as_bytes()).map_err(|e| format!("cannot write {}: {e}", key.display()))?;
    }
    let fp = fingerprint(&cert)?;
    Ok((Tls { cert, key }, fp))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        f.write_all(data)?;
        f.sync_all()
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, data)
    }
}

/// SHA-256 fingerprint of the first certificate in a PEM file, as colon-separated hex.
pub fn fingerprint(cert_pem: &Path) -> Result<String, String> {
    let pem = std::fs::read_to_string(cert_pem).map_err(|e| format!("cannot read {}: {e}", cert_pem.display()))?;
    let b64: String = pem.lines().skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE")).skip(1).take_while(|l| !l.starts_with("-----END")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| format!("{} is not a PEM certificate", cert_pem.display()))?;
    let d = Sha256::digest(der);
    Ok(d.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

/// The full application: API and web pages with limits, timeouts and security headers.
pub fn app(state: Shared) -> axum::Router {
    let limits = state.limits;
    let proxies = state.trusted_proxies.clone();
    let cap = |t| TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, t);
    api::router(state.clone())
        .merge(crate::web::router(state.clone()))
        .merge(crate::app_assets::router())
        .layer(cap(limits.request_timeout))
        .merge(api::sync_router(state).layer(cap(limits.sync_timeout)))
        .layer(DefaultBodyLimit::max(sync_protocol::wire::MAX_MESSAGE_BYTES))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        // A panic in a handler answers that request 500 (JSON), and only that request.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            tracing::error!("a request handler panicked");
            axum::response::IntoResponse::into_response(crate::error::AppError::internal())
        }))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, html_only(HeaderValue::from_static("DENY"))))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            html_only(HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")),
        ))
        .layer(axum::middleware::from_fn(move |req, next| https_behind_proxy(proxies.clone(), req, next)))
}

/// A body declared longer than its route takes is refused from its head, before any of it is
/// read: a phone on 2G learns at once instead of after uploading it, and a client whose upload
/// is cut still had the answer sent first. (Bodies without a length are bounded as they are
/// read, by `DefaultBodyLimit`.)
async fn refuse_declared_oversize(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let path = req.uri().path();
    let limit = if path.starts_with("/api/v1/auth/") || path == "/login" { api::AUTH_BODY_LIMIT } else { sync_protocol::wire::MAX_MESSAGE_BYTES };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        let e = crate::error::AppError::new(StatusCode::PAYLOAD_TOO_LARGE, sync_protocol::ErrorCode::TooLarge, format!("request bodies here are at most {limit} bytes"));
        let mut res = axum::response::IntoResponse::into_response(e);
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    next.run(req).await
}

/// HTTPS as the browser sees it: TLS ended in this process, or in a trusted proxy that says so
/// (`X-Forwarded-Proto: https` from an address given with `--trusted-proxy`). Such a request's
/// cookies are `Secure` (the pages read `Transport`), and its answer carries HSTS, so that a
/// browser never comes back over plain HTTP.
async fn https_behind_proxy(trusted: Vec<std::net::IpAddr>, mut req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let tls = req.extensions().get::<crate::web::Transport>().is_none_or(|t| t.https);
    let peer = req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let forwarded = peer.is_some_and(|p| trusted.contains(&p))
        && req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")));
    let https = tls || forwarded;
    if forwarded {
        req.extensions_mut().insert(crate::web::Transport { https: true });
    }
    let mut res = next.run(req).await;
    if https {
        res.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    res
}

/// Page-only headers (framing, CSP) matter for documents a browser renders; binary sync answers
/// go to phones on metered links, so they are not given these bytes.
fn html_only(value: HeaderValue) -> impl Fn(&axum::response::Response) -> Option<HeaderValue> + Clone {
    move |res: &axum::response::Response| {
        let html = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("text/html"));
        html.then(|| value.clone())
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests (syncs included) finish for up to 30 seconds. Each connection is held to
/// `state.limits` (stall bound, connection cap: see [`crate::conn`]).
pub async fn launch(state: Shared, listener: TcpListener, tls: Option<Tls>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    install_crypto_provider();
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h2.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    // Ends with the server (it holds the store, whose embedded files stay locked meanwhile).
    let _sweep = AbortOnDrop(expire_uploads_every(state.db.clone(), Duration::from_secs(600)));
    let _witness = AbortOnDrop(witness_audit_every(state.db.clone(), state.audit_witness.clone(), Duration::from_secs(10)));
    let _check = AbortOnDrop(check_store(state.clone()));
    // The pages mark their cookies `Secure` when the connection is HTTPS.
    let transport = crate::web::Transport { https: tls.is_some() };
    let guard = GuardedAcceptor::new(&state.limits, &state.trusted_proxies);
    let head = state.limits.head;
    let make = app(state).layer(axum::Extension(transport)).into_make_service_with_connect_info::<SocketAddr>();
    // A request's head must arrive within `head`, however slowly its bytes trickle.
    fn http1<A>(server: &mut axum_server::Server<A>, head: Duration) {
        server.http_builder().http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(head);
    }
    match tls {
        Some(tls) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key).await?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config).acceptor(guard);
            let mut server = axum_server::from_tcp(listener).acceptor(acceptor).handle(handle);
            http1(&mut server, head);
            server.serve(make).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener).acceptor(guard).handle(handle);
            http1(&mut server, head);
            server.serve(make).await
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every `period`, takes the audit chain's newest signed checkpoint out of the store: one log
/// line, and one line appended to the witness file when there is one (see
/// `crate::db::AuditCheckpoint`: a store rolled back past it no longer verifies). At start, says
/// at once whether the store still holds every checkpoint the witness file recorded.
fn witness_audit_every(db: crate::db::Db, witness: Option<PathBuf>, period: Duration) -> tokio::task::JoinHandle<()> {
    use crate::db::AuditWitness;
    tokio::spawn(async move {
        let seen = witness.as_deref().map(AuditWitness::read).unwrap_or_default();
        let mut last = seen.iter().map(|w| w.seq).max().unwrap_or(0);
        if !seen.is_empty() {
            let db = db.clone();
            match tokio::task::spawn_blocking(move || db.audit_log().verify_audit_chain_against(&seen)).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(at))) => tracing::error!(broken_at = at, "the audit log does not reach the checkpoint in its witness file: entries were removed (or the store was restored: see docs/reliability.md)"),
                _ => tracing::warn!("could not check the audit log against its witness file"),
            }
        }
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let db = db.clone();
            let Ok(Ok(Some(ck))) = tokio::task::spawn_blocking(move || db.audit_log().latest_audit_checkpoint()).await else { continue };
            if ck.seq <= last {
                continue;
            }
            last = ck.seq;
            tracing::info!(entries = ck.seq, signature = %ck.signature, "audit checkpoint");
            if let Some(path) = &witness {
                use std::io::Write;
                let line = format!("{}\n", AuditWitness::line(&ck));
                let written = std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| {
                    f.write_all(line.as_bytes())?;
                    f.sync_data()
                });
                if let Err(e) = written {
                    tracing::warn!(error = %e, file = %path.display(), "could not write the audit witness");
                }
            }
        }
    })
}

/// The full store check (`crate::check`), once, in the background after start: its findings go
/// to the log and to `/healthz`.
fn check_store(state: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let db = state.db.clone();
        let found = match tokio::task::spawn_blocking(move || db.check()).await {
            Ok(Ok(report)) if report.is_sound() => {
                tracing::info!(records = report.records, audit_entries = report.audit_entries, "store check: sound");
                return;
            }
            Ok(Ok(report)) => {
                for p in &report.problems {
                    tracing::error!(problem = %p, "store check");
                }
                format!("{} problem(s) found (see the log; `gesync-server check` lists them)", report.problems.len())
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "store check: the store could not be read to its end");
                "the store could not be read to its end (see the log)".to_string()
            }
            Err(_) => {
                tracing::error!("store check: the storage layer failed on damaged data");
                "the storage layer failed on damaged data (see the log)".to_string()
            }
        };
        *state.store_check.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
    })
}

/// Drops abandoned uploads now and every `period` while the server runs (see `uploads.rs`).
fn expire_uploads_every(db: crate::db::Db, period: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let db = db.clone();
            match tokio::task::spawn_blocking(move || db.uploads().expire_uploads(crate::db::now_secs())).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(uploads = n, "abandoned uploads dropped"),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not drop abandoned uploads"),
                Err(e) => tracing::warn!(error = %e, "could not drop abandoned uploads"),
            }
        }
    })
}

/// Threads of the runtime's blocking pool, where the data layer's work runs (token and session
/// checks, syncs, pages, hashing). tokio's default is 512: a thousand phones syncing at the same
/// instant made 289 threads, each keeping its own allocator pages (mimalloc's heaps are per
/// thread), for a peak of 841 MiB. The syncs worked on at once are bounded apart
/// (`api::sync_work_permits`); past this bound, work waits in the pool's queue.
pub const BLOCKING_THREADS: usize = 64;

/// The runtime the server runs on ([`run`]): tokio's, with [`BLOCKING_THREADS`].
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().max_blocking_threads(BLOCKING_THREADS).enable_all().build()
}

/// Opens everything and serves until SIGINT/SIGTERM (used by `serve` and `demo`).
pub async fn run(config: Config, db: Db, on_listening: impl FnOnce(SocketAddr)) -> Result<(), String> {
    crate::heap::return_freed_memory();
    // While the server holds the embedded store's lock, `gesync-server backup` asks it over
    // this socket (a shared database is read by `backup` directly).
    #[cfg(unix)]
    let _admin = match config.storage.data_dir() {
        Some(dir) => Some(crate::admin_socket::listen(db.clone(), dir)?),
        None => None,
    };
    // Reads the signing keys: a store call, off the async workers.
    let (limits, proxies, token, witness) = (config.limits, config.trusted_proxies, config.metrics_token, config.audit_witness);
    let state = tokio::task::spawn_blocking(move || AppState::with_config(db, limits, proxies, token, witness))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(config.listen).map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    on_listening(listener.local_addr().map_err(|e| e.to_string())?);
    launch(state, listener, config.tls, shutdown_signal()).await.map_err(|e| format!("server failed: {e}"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}
