//! How the SDK talks to the server: the small [`Transport`] trait (three calls), and
//! [`HttpTransport`], its `reqwest` implementation. Tests drive the sync loop through an
//! in-process implementation of the same trait.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sync_protocol::ErrorCode;

use crate::error::{Error, Result};

/// A boxed, sendable future (the trait is object-safe so one transport can serve many phones).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `POST /api/v1/auth/login` body. `Debug` hides the password.
#[derive(Clone, Serialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    pub device_id: String,
    /// The proof the server gave this device at its last login as this user: with it, guesses
    /// at the account from elsewhere do not hold this device's login back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_proof: Option<String>,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// The answer to login and refresh. `Debug` hides the tokens.
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    #[serde(default)]
    pub token_type: String,
    #[serde(default)]
    pub expires_in: u64,
    /// Given by a password login (not by a refresh): keep it for the next password login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_proof: Option<String>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// What a transport call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No HTTP answer at all (DNS, refused connection, TLS, timeout).
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// An HTTP error answer, with the server's `{"error": {"code", "message"}}` when it sent one.
    #[error("HTTP {status} {code}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<u64>,
    },
    /// An answer that is not what the API promises.
    #[error("{0}")]
    BadResponse(String),
}

impl TransportError {
    /// Convenience for implementations: an HTTP error with the API's error code.
    pub fn status(status: u16, code: &str, message: &str) -> Self {
        TransportError::Status {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// The API's error code of an HTTP error answer, when this build knows it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            TransportError::Status { code, .. } => ErrorCode::parse(code),
            _ => None,
        }
    }

    /// What the phone does with this refusal (`client_core::Refusal`, the one rule every
    /// driver follows); `None` when the server gave no answer at all.
    pub fn refusal(&self) -> Option<client_core::Refusal> {
        match self {
            TransportError::Status { status, code, .. } => Some(client_core::Refusal::of(*status, code)),
            _ => None,
        }
    }


}

impl From<TransportError> for Error {
    fn from(e: TransportError) -> Error {
        match e {
            TransportError::Unreachable { url, reason } => Error::Unreachable { url, reason },
            TransportError::Status {
                status: 429,
                retry_after,
                ..
            } => Error::Throttled { retry_after },
            TransportError::Status {
                status: 503,
                retry_after,
                ..
            } => Error::Busy { retry_after },
            TransportError::Status {
                status, message, ..
            } => Error::Server { status, message },
            TransportError::BadResponse(m) => Error::Protocol(m),
        }
    }
}

/// The three server calls the SDK makes.
pub trait Transport: Send + Sync {
    /// `POST /api/v1/auth/login`.
    fn login<'a>(&'a self, req: &'a LoginRequest) -> BoxFuture<'a, Result<Tokens, TransportError>>;
    /// `POST /api/v1/auth/refresh` (the refresh token rotates).
    fn refresh<'a>(
        &'a self,
        refresh_token: &'a str,
    ) -> BoxFuture<'a, Result<Tokens, TransportError>>;
    /// `POST /api/v1/sync`: an encoded `SyncRequest` in, the encoded `SyncResponse` out.
    fn sync<'a>(
        &'a self,
        access_token: &'a str,
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, TransportError>>;
}

/// Settings of [`HttpTransport`].
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Whole-request timeout of the small JSON calls (login, refresh).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// A sync exchange fails once no byte has moved, up or down, for this long. It has no
    /// whole-request timeout: on a 2G link a healthy page may take a minute, and only a stall
    /// is a failure.
    pub stall_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// The HTTP(S) transport. Cheap to clone; share one among many phones of a simulation so that
/// they share the connection pool.
#[derive(Clone)]
pub struct HttpTransport {
    base: String,
    client: reqwest::Client,
    timeout: Duration,
    stall: Duration,
    /// Sync requests sent (shared by clones), retries included.
    sent: Arc<AtomicU64>,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Checks a server URL and returns it without a trailing `/`.
pub fn normalize_server_url(server: &str) -> Result<String> {
    let bad = || {
        Error::Config(format!(
            "`{}` is not a server URL: use e.g. https://gesync.example.vn:8443",
            server.chars().take(80).collect::<String>()
        ))
    };
    let url = reqwest::Url::parse(server).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config("put no credentials in the server URL".into()));
    }
    // Records and tokens travel in clear over plain HTTP: only to this machine (tests, a local
    // server), never over a network.
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(Error::Config(format!(
            "`{}` is plain HTTP: use https:// (plain HTTP is only for a server on this machine)",
            server.chars().take(80).collect::<String>()
        )));
    }
    Ok(server.trim_end_matches('/').to_string())
}

impl HttpTransport {
    /// A transport for `server` (`https://host:port` or, on loopback, `http://...`), trusting the
    /// certificates in the PEM file `ca_cert` (the server's self-signed certificate or its CA).
    pub fn new(server: &str, ca_cert: Option<&Path>, config: &HttpConfig) -> Result<Self> {
        let base = normalize_server_url(server)?;
        // reqwest is built without a default crypto provider; install ring once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Connections are kept between the pages of a sync (each new one costs round trips and,
        // over TLS, a handshake that rustls's session cache shortens on reconnect), but dropped
        // before the server's 30 s idle bound closes them under a request.
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(20))
            .user_agent(concat!("gesync-field/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).map_err(Error::io("read the CA certificate", path))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
                Error::Config(format!("{} is not a PEM certificate file", path.display()))
            })?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot set up HTTPS: {}", innermost(&e))))?;
        Ok(HttpTransport {
            base,
            client,
            timeout: config.timeout,
            stall: config.stall_timeout,
            sent: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The server URL, without a trailing `/`.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// Sync requests this transport (and its clones) sent, each retry counted.
    pub fn sync_requests(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    async fn post(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, TransportError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        finish(path, status, retry_after, &body)
    }

    /// `POST /api/v1/sync` once, failing on a stall rather than on size: the body goes up in
    /// small chunks and the answer comes down chunk by chunk, and a watchdog ends the exchange
    /// when neither has moved for `stall`.
    async fn sync_once(&self, access_token: &str, body: &[u8]) -> Result<Vec<u8>, TransportError> {
        const PATH: &str = "/api/v1/sync";
        const CHUNK: usize = 4 * 1024;
        self.sent.fetch_add(1, Ordering::Relaxed);
        let start = tokio::time::Instant::now();
        // Milliseconds from `start` to the last moment a byte moved.
        let moved = Arc::new(AtomicU64::new(0));
        let mark = {
            let moved = moved.clone();
            move || moved.store(start.elapsed().as_millis() as u64, Ordering::Relaxed)
        };
        let chunks: Vec<bytes::Bytes> = body.chunks(CHUNK).map(bytes::Bytes::copy_from_slice).collect();
        let up = {
            let mark = mark.clone();
            // Hyper asks for the next chunk once the connection took the previous one.
            futures_util::stream::iter(chunks.into_iter().map(move |c| {
                mark();
                Ok::<_, std::io::Error>(c)
            }))
        };
        let request = self
            .client
            .post(format!("{}{PATH}", self.base))
            .bearer_auth(access_token)
            .header(reqwest::header::CONTENT_TYPE, sync_protocol::wire::CONTENT_TYPE)
            .header(reqwest::header::CONTENT_LENGTH, body.len())
            .body(reqwest::Body::wrap_stream(up));
        let exchange = async {
            let mut response = request.send().await.map_err(|e| self.unreachable(&e))?;
            mark();
            let status = response.status();
            let retry_after = retry_after(&response);
            let mut answer = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
                mark();
                answer.extend_from_slice(&chunk);
                if answer.len() > sync_protocol::wire::MAX_MESSAGE_BYTES + 64 * 1024 {
                    return Err(TransportError::BadResponse("the sync answer is larger than any page may be".into()));
                }
            }
            finish(PATH, status, retry_after, &answer)
        };
        let watchdog = async {
            loop {
                let idle = start.elapsed().saturating_sub(Duration::from_millis(moved.load(Ordering::Relaxed)));
                if idle >= self.stall {
                    return;
                }
                tokio::time::sleep(self.stall - idle).await;
            }
        };
        tokio::select! {
            result = exchange => result,
            () = watchdog => Err(TransportError::Unreachable {
                url: self.base.clone(),
                reason: format!("{TIMED_OUT}: no byte moved for {} s", self.stall.as_secs()),
            }),
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// A finished HTTP exchange: the body of a success, else the API's error.
fn finish(path: &str, status: reqwest::StatusCode, retry_after: Option<u64>, body: &[u8]) -> Result<Vec<u8>, TransportError> {
        if status.is_success() {
            return Ok(body.to_vec());
        }
        #[derive(Deserialize)]
        struct ApiError {
            error: ApiErrorBody,
        }
        #[derive(Deserialize)]
        struct ApiErrorBody {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let (code, message) = match serde_json::from_slice::<ApiError>(body) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => (
                String::new(),
                format!(
                    "{} (POST {path})",
                    status.canonical_reason().unwrap_or("error")
                ),
            ),
        };
        // One line only: the message is shown as is.
        let message = message.replace(['\n', '\r'], " ");
        Err(TransportError::Status {
            status: status.as_u16(),
            code,
            message,
            retry_after,
        })
}

impl HttpTransport {
    fn unreachable(&self, e: &reqwest::Error) -> TransportError {
        let reason = if e.is_timeout() {
            TIMED_OUT.to_string()
        } else {
            let inner = innermost(e);
            if inner.contains("UnknownIssuer") || inner.contains("certificate") {
                format!("{inner} (pass the server's certificate with --ca-cert PEM)")
            } else {
                inner
            }
        };
        TransportError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }

    async fn json_call(&self, path: &str, body: &impl Serialize) -> Result<Tokens, TransportError> {
        let url = format!("{}{path}", self.base);
        let bytes = self
            .post(path, self.client.post(url).timeout(self.timeout).json(body))
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            TransportError::BadResponse(format!("POST {path}: not the expected JSON: {e}"))
        })
    }
}

const TIMED_OUT: &str = "the request timed out";

/// The deepest cause of an error, which is the informative one for connection failures.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string().replace(['\n', '\r'], " ")
}

impl Transport for HttpTransport {
    fn login<'a>(&'a self, req: &'a LoginRequest) -> BoxFuture<'a, Result<Tokens, TransportError>> {
        Box::pin(self.json_call("/api/v1/auth/login", req))
    }

    fn refresh<'a>(
        &'a self,
        refresh_token: &'a str,
    ) -> BoxFuture<'a, Result<Tokens, TransportError>> {
        Box::pin(async move {
            self.json_call(
                "/api/v1/auth/refresh",
                &serde_json::json!({ "refresh_token": refresh_token }),
            )
            .await
        })
    }

    fn sync<'a>(
        &'a self,
        access_token: &'a str,
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            match self.sync_once(access_token, &body).await {
                // A failure at once is most often a pooled keep-alive connection the server (or
                // a middlebox) had already closed. A sync request is idempotent on the server,
                // so one immediate retry on a fresh connection is safe. A stall, or a link cut
                // in the middle of a page, is not retried here: the sync loop decides, with a
                // smaller page and backoff.
                Err(TransportError::Unreachable { reason, .. })
                    if !reason.starts_with(TIMED_OUT) && started.elapsed() < Duration::from_secs(1) =>
                {
                    self.sync_once(access_token, &body).await
                }
                other => other,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        assert_eq!(
            normalize_server_url("https://a.vn:8443/").unwrap(),
            "https://a.vn:8443"
        );
        assert!(normalize_server_url("a.vn").is_err());
        assert!(normalize_server_url("ftp://a.vn").is_err());
        assert!(normalize_server_url("https://u:p@a.vn").is_err());
        // Plain HTTP only to this machine.
        assert!(normalize_server_url("http://127.0.0.1:8080").is_ok());
        assert!(normalize_server_url("http://localhost:8080").is_ok());
        assert!(normalize_server_url("http://[::1]:8080").is_ok());
        assert!(normalize_server_url("http://gesync.example.vn").is_err());
        assert!(normalize_server_url("http://10.0.0.5:8080").is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let t = Tokens {
            access_token: "AAA".into(),
            refresh_token: "RRR".into(),
            token_type: "Bearer".into(),
            expires_in: 5,
            device_proof: Some("DDD".into()),
        };
        let l = LoginRequest {
            username: "u".into(),
            password: "PPP".into(),
            device_id: "d".into(),
            device_proof: Some("QQQ".into()),
        };
        let shown = format!("{t:?} {l:?}");
        assert!(
            !["AAA", "RRR", "PPP", "DDD", "QQQ"].iter().any(|s| shown.contains(s)),
            "{shown}"
        );
    }
}
