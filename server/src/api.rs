//! The HTTP API of `contract.md`. Handlers are thin: extract, ask the policy in `model.rs`,
//! call the data layer on the blocking pool, map the result.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::Router;
use indicators::{IndicatorId, Milestones, Period};
use serde::Deserialize;
use serde_json::{json, Value};
use sync_protocol::wire::{SyncRequest, CONTENT_TYPE, MAX_MESSAGE_BYTES};
use sync_protocol::{ErrorCode, OrgUnitCode, RecordId, RecordKind};

use crate::auth::{self, Keys, RefreshError, TokenError};
use crate::throttle::Throttle;
use crate::db::{now_secs, AuditEvent, Db, Merged};
use crate::error::{AppError, AppResult};
use crate::model::{Device, OrgTree, OrgUnit, Principal, Role, User};
use crate::report_file::ReportFormat;

/// Shared state of the HTTP layer.
pub struct AppState {
    pub db: Db,
    pub keys: Keys,
    pub throttle: Throttle,
    pub metrics: Metrics,
    /// Limits concurrent argon2 hashing (48 MiB each). The permit is held inside the blocking
    /// task, so an abandoned request does not free it while its hash still runs.
    pub hashing: Arc<tokio::sync::Semaphore>,
    /// Logins waiting for a hashing permit (bounded: past it, 503 at once).
    pub hash_queue: std::sync::atomic::AtomicUsize,
    /// Connection and request limits (see [`crate::conn`]).
    pub limits: crate::conn::Limits,
    /// Proxies whose `X-Forwarded-For` names the client (see [`ClientIp`]).
    pub trusted_proxies: Vec<IpAddr>,
    /// Sync requests in flight per user (see [`SyncSlot`]).
    pub syncs_in_flight: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// The bearer token a monitoring system presents at `/metrics` (`GESYNC_METRICS_TOKEN`);
    /// without one, only an admin's access token reads it.
    pub metrics_token: Option<String>,
}

/// Sync requests one user may have in flight at once: a phone syncs one page at a time, so a
/// few cover a user's devices; more is one account making the server work for many.
pub const SYNCS_PER_USER: usize = 4;

/// Argon2 hashes run at once (48 MiB each).
const HASHING_PERMITS: usize = 2;
/// Logins that may wait for a hashing permit; more are answered 503 at once.
const MAX_HASH_QUEUE: usize = 400;
/// Longest a login waits for a hashing permit before it is answered 503.
const HASH_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Counters exported at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub sync_requests: AtomicU64,
    pub sync_bytes_in: AtomicU64,
    pub sync_bytes_out: AtomicU64,
    pub records_accepted: AtomicU64,
    pub records_rejected: AtomicU64,
    pub login_failures: AtomicU64,
    pub logins: AtomicU64,
    /// Logins answered 429 (throttled) or 503 (hashing queue full).
    pub logins_refused: AtomicU64,
    /// Refreshes with an unknown, expired or reused token.
    pub refresh_failures: AtomicU64,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn new(db: Db) -> Result<Shared, crate::db::DbError> {
        Self::with_limits(db, crate::conn::Limits::default())
    }

    pub fn with_limits(db: Db, limits: crate::conn::Limits) -> Result<Shared, crate::db::DbError> {
        Self::with_config(db, limits, Vec::new(), None)
    }

    pub fn with_config(db: Db, limits: crate::conn::Limits, trusted_proxies: Vec<IpAddr>, metrics_token: Option<String>) -> Result<Shared, crate::db::DbError> {
        let keys = Keys::load(&db)?;
        prometheus();
        Ok(Arc::new(AppState {
            db,
            keys,
            throttle: Throttle::default(),
            metrics: Metrics::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(HASHING_PERMITS)),
            hash_queue: std::sync::atomic::AtomicUsize::new(0),
            limits,
            trusted_proxies,
            syncs_in_flight: Default::default(),
            metrics_token: metrics_token.filter(|t| !t.is_empty()),
        }))
    }
}

/// A JSON body whose parse errors come back in the API's error format.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(v))
    }
}

/// A query string whose parse errors come back in the API's error format.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(v) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Q(v))
    }
}

/// The authenticated caller. Checks the token, then the user and device as they are *now*.
pub struct Authed(pub Principal);

impl FromRequestParts<Shared> for Authed {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| AppError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
        let principal = principal_from_token(state, token)?;
        Ok(Authed(principal))
    }
}

/// Verifies an access token and the current state of its user and device.
pub fn principal_from_token(state: &AppState, token: &str) -> AppResult<Principal> {
    let claims = state.keys.verify_access(token).map_err(|e| match e {
        TokenError::Expired => AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired, "access token expired: refresh it or log in again"),
        TokenError::Invalid => AppError::unauthorized("invalid access token"),
    })?;
    let user = state.db.get_user(&claims.sub)?.ok_or_else(|| AppError::unauthorized("invalid access token"))?;
    if user.disabled {
        return Err(account_disabled());
    }
    if user.session_epoch != claims.ep || (!claims.fam.is_empty() && state.db.refresh_family_revoked(&claims.fam)?) {
        return Err(AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::SessionEnded, "this session has ended: log in again"));
    }
    // Fails closed: a token whose device is not (or no longer) registered is treated as revoked,
    // as refresh and the web sessions treat it.
    if !crate::model::device_is_live(state.db.get_device(&user.username, &claims.dev)?.as_ref()) {
        return Err(device_revoked());
    }
    Ok(Principal { username: user.username, role: user.role, org_unit: user.org_unit, device_id: claims.dev })
}

/// A disabled account's phone is told to wipe, as a revoked device's is: its records describe
/// victims, and whoever holds the phone is no longer entitled to them.
fn account_disabled() -> AppError {
    AppError::new(StatusCode::FORBIDDEN, ErrorCode::AccountDisabled, "this account was disabled by an administrator: wipe its local data")
}

fn device_revoked() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::DeviceRevoked,
        "this device was revoked by an administrator: wipe its local data",
    )
}

fn require_admin(p: &Principal) -> AppResult<()> {
    if p.is_admin() {
        Ok(())
    } else {
        Err(AppError::forbidden("only an admin may do this"))
    }
}

/// An admin acting on `unit`: only inside the admin's own subtree (`Principal::may_administer`).
pub fn require_admin_of(p: &Principal, tree: &OrgTree, unit: &str) -> AppResult<()> {
    require_admin(p)?;
    if tree.get(unit).is_none() {
        return Err(AppError::not_found("unknown org unit"));
    }
    if p.may_administer(tree, unit) {
        Ok(())
    } else {
        Err(AppError::forbidden("that org unit is outside the units you administer"))
    }
}

/// A user of `role` on `unit`: the unit exists and the role fits its level (`Role::fits`).
pub fn check_role_fits(tree: &OrgTree, role: Role, unit: &str) -> AppResult<()> {
    let u = tree.get(unit).ok_or_else(|| AppError::bad_request(format!("unknown org unit `{}`", unit.chars().take(20).collect::<String>())))?;
    if role.fits(tree, u) {
        Ok(())
    } else {
        Err(AppError::bad_request(format!("a {role} cannot be assigned to `{}`, a {}", u.code, u.level)))
    }
}

/// An admin adding or changing `unit`: it (if it exists) and its new parent must be in the
/// admin's subtree. A unit without a parent (a province) is added with the command line
/// (`gesync-server admin add-org-unit`), by whoever runs the server.
pub fn check_org_unit_change(p: &Principal, tree: &OrgTree, unit: &OrgUnit) -> AppResult<()> {
    require_admin(p)?;
    if tree.get(&unit.code).is_some() {
        require_admin_of(p, tree, &unit.code)?;
    }
    match &unit.parent {
        Some(parent) => require_admin_of(p, tree, parent),
        None => Err(AppError::forbidden("a unit without a parent (a province) is added with `gesync-server admin add-org-unit`")),
    }
}

fn audit(p: &Principal, action: &'static str, target: impl Into<String>) -> Option<AuditEvent> {
    Some(AuditEvent { user: p.username.clone(), device_id: Some(p.device_id.clone()), action, target: target.into() })
}

/// Runs blocking data-layer work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> AppResult<T> + Send + 'static) -> AppResult<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Largest body of the login, refresh and logout calls (and the web login form): a few KiB is
/// plenty for a user name, a password and a token, and no one can make the server read more
/// before it knows who is asking.
pub const AUTH_BODY_LIMIT: usize = 4 * 1024;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/auth/login", post(login).layer(DefaultBodyLimit::max(AUTH_BODY_LIMIT)))
        .route("/api/v1/auth/refresh", post(refresh).layer(DefaultBodyLimit::max(AUTH_BODY_LIMIT)))
        .route("/api/v1/auth/logout", post(logout).layer(DefaultBodyLimit::max(AUTH_BODY_LIMIT)))
        .route("/api/v1/me", get(me))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{username}", patch(update_user))
        .route("/api/v1/users/{username}/devices", get(list_devices))
        .route("/api/v1/users/{username}/devices/{device_id}/revoke", post(revoke_device))
        .route("/api/v1/org-units", get(list_org_units).post(add_org_unit))
        .route("/api/v1/org-units/{code}/merge", post(merge_org_unit))
        .route("/api/v1/targets/{org_unit}/{indicator}", put(set_target))
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/records", get(list_records))
        .route("/api/v1/records/{id}", get(get_record))
        .route("/api/v1/indicators", get(get_indicators))
        .route("/api/v1/reports/{org_unit}/{file}", get(report_file))
        .route("/api/v1/calendar", get(calendar))
        .route("/api/v1/conflicts", get(list_conflicts))
        .route("/api/v1/conflicts/{id}/resolve", post(resolve_conflict))
        .route("/api/v1/duplicates", get(list_duplicates))
        .route("/api/v1/duplicates/{id}/not-duplicate", post(dismiss_duplicate))
        .route("/api/v1/duplicates/{id}/merge", post(merge_duplicate))
        .route("/api/v1/approvals", get(list_approvals).post(approve_period))
        .fallback(|| async { AppError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { AppError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed, "this endpoint does not accept that method") })
        .with_state(state)
}

/// `POST /api/v1/sync`, apart from [`router`] because its whole-request cap differs: a page on
/// a 2G link may take minutes and is bounded by stalls instead (see [`crate::conn`]).
pub fn sync_router(state: Shared) -> Router {
    Router::new().route("/api/v1/sync", post(sync)).with_state(state)
}

// ---- auth ------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
    device_id: Option<String>,
}

fn valid_device_id(d: &str) -> bool {
    (1..=64).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The client's address: the connection's peer, or, when the peer is a configured trusted
/// proxy, the last address in `X-Forwarded-For` that is not itself a trusted proxy (the
/// entries before it could be anything the client wrote). Loopback when the server runs without
/// connection info, as in in-process tests.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Shared> for ClientIp {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(ClientIp(client_address(peer, &parts.headers, &state.trusted_proxies)))
    }
}

fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|a| a.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    forwarded.into_iter().rev().find(|a| !trusted.contains(a)).unwrap_or(peer)
}

async fn tokens_response(state: &Shared, p: &Principal, epoch: u64) -> AppResult<Value> {
    let (db, u, d) = (state.db.clone(), p.username.clone(), p.device_id.clone());
    let (refresh, family) = blocking(move || Ok(db.issue_refresh(&u, &d, epoch)?)).await?;
    Ok(tokens_json(state.keys.issue_access(p, epoch, Some(&family)), refresh))
}

fn tokens_json(access: String, refresh: String) -> Value {
    json!({
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": auth::ACCESS_TTL_SECS,
    })
}

/// Verifies credentials and registers the device. Shared by the API and the web login.
///
/// In order, each step cheap before the next: the user name's form (nothing else is done with a
/// malformed one, not even keeping it as a throttle key); the throttle, which counts the attempt
/// on admission (`crate::throttle`); a bounded wait for one of the hashing permits (503 with
/// `Retry-After` at once when the queue is full, so a login storm is answered, not timed out);
/// the argon2 check on the blocking pool, holding its permit to the end.
pub async fn authenticate(state: &Shared, ip: IpAddr, username: &str, password: &str, device_id: &str) -> AppResult<(Principal, u64)> {
    let denied = || AppError::unauthorized("wrong username or password, or the account is disabled");
    if !valid_username(username) || password.len() > MAX_PASSWORD_BYTES {
        state.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
        return Err(denied());
    }
    let (user, known_device) = {
        let db = state.db.clone();
        let (u, d) = (username.to_string(), device_id.to_string());
        blocking(move || {
            let user = db.get_user(&u)?;
            let known = match &user {
                Some(user) => db.get_device(&user.username, &d)?.is_some_and(|dev| !dev.revoked),
                None => false,
            };
            Ok((user, known))
        })
        .await?
    };
    let attempt = state.throttle.admit(username, ip, known_device.then_some(device_id)).map_err(|wait| {
        state.metrics.logins_refused.fetch_add(1, Ordering::Relaxed);
        let mut e = AppError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::Throttled, "too many failed logins: wait before trying again");
        e.retry_after = Some(wait.as_secs().max(1));
        e
    })?;
    let permit = hashing_permit(state).await?;
    let phc = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| auth::dummy_hash().to_string());
    let pw = password.to_string();
    let ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        auth::verify_password(&pw, &phc)
    })
    .await?;
    let user = match user {
        Some(u) if ok && !u.disabled => u,
        other => {
            attempt.failed();
            state.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
            // A typed user name that is no account is often a password typed into the wrong
            // field: it is not written down.
            let who = other.map(|u| u.username).unwrap_or_else(|| "(no such account)".into());
            let ev = AuditEvent { user: who, device_id: Some(device_id.to_string()), action: "login_failed", target: ip.to_string() };
            let db = state.db.clone();
            blocking(move || Ok(db.audit(ev)?)).await?;
            return Err(denied());
        }
    };
    attempt.succeeded();
    let db = state.db.clone();
    let (un, dev) = (user.username.clone(), device_id.to_string());
    let ev = AuditEvent { user: user.username.clone(), device_id: Some(device_id.to_string()), action: "login", target: ip.to_string() };
    blocking(move || {
        let now = now_secs();
        let device = match db.get_device(&un, &dev)? {
            Some(d) if d.revoked => return Err(device_revoked()),
            Some(d) => Device { last_seen: now, ..d },
            None => Device { username: un.clone(), device_id: dev.clone(), first_seen: now, last_seen: now, revoked: false },
        };
        db.put_device(&device, Some(ev))?;
        Ok(())
    })
    .await?;
    state.metrics.logins.fetch_add(1, Ordering::Relaxed);
    let epoch = user.session_epoch;
    Ok((Principal { username: user.username, role: user.role, org_unit: user.org_unit, device_id: device_id.to_string() }, epoch))
}

/// Longest password accepted at login (argon2 hashes any length; this bounds the work).
const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes an admin-set password on the blocking pool, holding one of the argon2 permits until
/// the hash is done (an abandoned request does not free it early).
async fn hash_new_password(state: &Shared, password: String) -> AppResult<String> {
    let permit = state.hashing.clone().acquire_owned().await.map_err(|_| AppError::internal())?;
    Ok(tokio::task::spawn_blocking(move || {
        let _permit = permit;
        auth::hash_password(&password)
    })
    .await?)
}

/// One of the argon2 permits, or 503 with `Retry-After` when too many logins already wait.
async fn hashing_permit(state: &Shared) -> AppResult<tokio::sync::OwnedSemaphorePermit> {
    let busy = |waiting: usize| {
        state.metrics.logins_refused.fetch_add(1, Ordering::Relaxed);
        let mut e = AppError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, "the server is busy with other logins: try again shortly");
        // About 20 hashes a second get through on two permits: ask to come back when the
        // queue ahead has drained, spread a little so that the retries do not arrive together.
        e.retry_after = Some(2 + (waiting as u64) / 20 + rand::random::<u64>() % 5);
        e
    };
    let waiting = state.hash_queue.fetch_add(1, Ordering::AcqRel);
    let _leave = scopeguard_dec(&state.hash_queue);
    if waiting >= MAX_HASH_QUEUE {
        return Err(busy(waiting));
    }
    match tokio::time::timeout(HASH_WAIT, state.hashing.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(AppError::internal()),
        Err(_) => Err(busy(state.hash_queue.load(Ordering::Acquire))),
    }
}

/// Records the time since `started` in histogram `name` when dropped (however the handler ends).
fn scopeguard_histogram(name: &'static str, started: std::time::Instant) -> impl Drop {
    struct Timer(&'static str, std::time::Instant);
    impl Drop for Timer {
        fn drop(&mut self) {
            metrics::histogram!(self.0).record(self.1.elapsed().as_secs_f64());
        }
    }
    Timer(name, started)
}

/// Decrements the counter when dropped (the login left the queue, however it left).
fn scopeguard_dec(counter: &std::sync::atomic::AtomicUsize) -> impl Drop + '_ {
    struct Dec<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Dec<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    Dec(counter)
}

async fn login(State(state): State<Shared>, ClientIp(ip): ClientIp, JsonBody(body): JsonBody<LoginBody>) -> AppResult<Response> {
    let _record = scopeguard_histogram("gesync_login_seconds", std::time::Instant::now());
    let device_id = body.device_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if !valid_device_id(&device_id) {
        return Err(AppError::bad_request("device_id must be 1 to 64 letters, digits, '-' or '_'"));
    }
    let (p, epoch) = authenticate(&state, ip, &body.username, &body.password, &device_id).await?;
    Ok(axum::Json(tokens_response(&state, &p, epoch).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

async fn refresh(State(state): State<Shared>, ClientIp(ip): ClientIp, JsonBody(body): JsonBody<RefreshBody>) -> AppResult<Response> {
    state.throttle.admit_refresh(ip).map_err(|wait| {
        let mut e = AppError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::Throttled, "too many refused refresh tokens: wait before trying again");
        e.retry_after = Some(wait.as_secs().max(1));
        e
    })?;
    let db = state.db.clone();
    let token = body.refresh_token;
    let used = blocking(move || Ok(db.use_refresh(&token)?)).await?;
    let rotation = match used {
        Ok(t) => t,
        Err(why) => {
            state.throttle.refresh_failed(ip);
            state.metrics.refresh_failures.fetch_add(1, Ordering::Relaxed);
            let msg = match why {
                RefreshError::Reused => {
                    // A family revoked is a security event: audited (once per family, since a
                    // revoked family's tokens all answer `Reused` without another write).
                    let db = state.db.clone();
                    let ev = AuditEvent { user: "-".into(), device_id: None, action: "refresh_reuse_revoked_family", target: ip.to_string() };
                    blocking(move || Ok(db.audit(ev)?)).await?;
                    "refresh token was already used: every session of this login is revoked; log in again"
                }
                // Unknown and expired tokens are counted (metrics, throttle), not audited: anyone
                // can send them, and each audit entry is a flushed write.
                RefreshError::Expired => "refresh token expired: log in again",
                RefreshError::Unknown => "unknown refresh token: log in again",
            };
            return Err(AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidRefreshToken, msg));
        }
    };
    let db = state.db.clone();
    let (u, d) = (rotation.username.clone(), rotation.device_id.clone());
    let (user, device) = blocking(move || Ok((db.get_user(&u)?, db.get_device(&u, &d)?))).await?;
    let user = match user {
        Some(u) if !u.disabled => u,
        Some(_) => return Err(account_disabled()),
        None => return Err(AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::SessionEnded, "this account no longer exists")),
    };
    if !crate::model::device_is_live(device.as_ref()) {
        return Err(device_revoked());
    }
    if user.session_epoch != rotation.epoch {
        // The password, role or org unit changed since this login (a reset after a phishing):
        // the family ends here, the phone logs in again.
        let (db, family) = (state.db.clone(), rotation.family.clone());
        blocking(move || Ok(db.revoke_refresh_family(&family)?)).await?;
        return Err(AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::SessionEnded, "the account changed since this login (password, role or org unit): log in again"));
    }
    let p = Principal { username: user.username.clone(), role: user.role, org_unit: user.org_unit.clone(), device_id: rotation.device_id };
    let db = state.db.clone();
    let ev = audit(&p, "token_refresh", "");
    blocking(move || Ok(db.audit(ev.expect("event"))?)).await?;
    Ok(axum::Json(tokens_json(state.keys.issue_access(&p, user.session_epoch, Some(&rotation.family)), rotation.token)).into_response())
}

async fn logout(State(state): State<Shared>, Authed(p): Authed, JsonBody(body): JsonBody<RefreshBody>) -> AppResult<StatusCode> {
    let db = state.db.clone();
    blocking(move || {
        db.revoke_refresh_family_of(&body.refresh_token)?;
        db.audit(audit(&p, "logout", "").expect("event"))?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(Authed(p): Authed) -> axum::Json<Value> {
    axum::Json(json!({"username": p.username, "role": p.role, "org_unit": p.org_unit, "device_id": p.device_id}))
}

// ---- admin: users, devices, org units, targets, audit ----------------------------------------

fn user_json(u: &User) -> Value {
    json!({"username": u.username, "role": u.role, "org_unit": u.org_unit, "disabled": u.disabled})
}

pub fn valid_username(u: &str) -> bool {
    (3..=64).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

async fn list_users(State(state): State<Shared>, Authed(p): Authed) -> AppResult<axum::Json<Value>> {
    require_admin(&p)?;
    let db = state.db.clone();
    let users = blocking(move || Ok(db.list_users()?)).await?;
    let tree = state.db.tree();
    Ok(axum::Json(Value::Array(users.iter().filter(|u| p.may_administer(&tree, &u.org_unit)).map(user_json).collect())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    role: String,
    org_unit: String,
}

/// Validates and creates a user (shared by the API, the web pages and the CLI).
pub async fn create_user_checked(state: &Shared, by: &Principal, nu: NewUserInput) -> AppResult<User> {
    if !valid_username(&nu.username) {
        return Err(AppError::bad_request("username must be 3 to 64 letters, digits, '.', '_' or '-'"));
    }
    let role: Role = nu.role.parse().map_err(AppError::bad_request)?;
    auth::check_password_policy(&nu.password).map_err(AppError::bad_request)?;
    let tree = state.db.tree();
    check_role_fits(&tree, role, &nu.org_unit)?;
    require_admin_of(by, &tree, &nu.org_unit)?;
    let hash = hash_new_password(state, nu.password.clone()).await?;
    let user = User { username: nu.username, role, org_unit: nu.org_unit, password_hash: hash, disabled: false, session_epoch: 0 };
    let db = state.db.clone();
    let u2 = user.clone();
    let ev = audit(by, "user_create", user.username.clone());
    blocking(move || Ok(db.put_user(&u2, true, ev)?)).await?;
    Ok(user)
}

/// Input of [`create_user_checked`].
pub struct NewUserInput {
    pub username: String,
    pub password: String,
    pub role: String,
    pub org_unit: String,
}

async fn create_user(State(state): State<Shared>, Authed(p): Authed, JsonBody(b): JsonBody<NewUser>) -> AppResult<(StatusCode, axum::Json<Value>)> {
    require_admin(&p)?;
    let u = create_user_checked(&state, &p, NewUserInput { username: b.username, password: b.password, role: b.role, org_unit: b.org_unit }).await?;
    Ok((StatusCode::CREATED, axum::Json(user_json(&u))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub role: Option<String>,
    pub org_unit: Option<String>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

/// Applies a user change (shared by the API and the web pages).
pub async fn update_user_checked(state: &Shared, by: &Principal, username: &str, b: UserPatch) -> AppResult<User> {
    let db = state.db.clone();
    let un = username.to_string();
    let mut user = blocking(move || Ok(db.get_user(&un)?)).await?.ok_or_else(|| AppError::not_found("no such user"))?;
    let tree = state.db.tree();
    require_admin_of(by, &tree, &user.org_unit)?;
    let mut end_sessions = false;
    if let Some(r) = b.role {
        user.role = r.parse().map_err(AppError::bad_request)?;
        end_sessions = true;
    }
    if let Some(ou) = b.org_unit {
        if tree.get(&ou).is_none() {
            return Err(AppError::bad_request("unknown org unit"));
        }
        require_admin_of(by, &tree, &ou)?;
        user.org_unit = ou;
        end_sessions = true;
    }
    if end_sessions {
        check_role_fits(&tree, user.role, &user.org_unit)?;
    }
    if let Some(d) = b.disabled {
        end_sessions |= d && !user.disabled;
        user.disabled = d;
    }
    if let Some(pw) = b.password {
        auth::check_password_policy(&pw).map_err(AppError::bad_request)?;
        user.password_hash = hash_new_password(state, pw).await?;
        end_sessions = true;
    }
    if end_sessions {
        user.session_epoch += 1;
    }
    let db = state.db.clone();
    let u2 = user.clone();
    let ev = audit(by, "user_update", user.username.clone());
    blocking(move || Ok(db.put_user(&u2, false, ev)?)).await?;
    Ok(user)
}

async fn update_user(State(state): State<Shared>, Authed(p): Authed, Path(username): Path<String>, JsonBody(b): JsonBody<UserPatch>) -> AppResult<axum::Json<Value>> {
    require_admin(&p)?;
    let u = update_user_checked(&state, &p, &username, b).await?;
    Ok(axum::Json(user_json(&u)))
}

async fn list_devices(State(state): State<Shared>, Authed(p): Authed, Path(username): Path<String>) -> AppResult<axum::Json<Value>> {
    require_admin(&p)?;
    let db = state.db.clone();
    let tree = state.db.tree();
    let devices = blocking(move || {
        let user = db.get_user(&username)?.ok_or_else(|| AppError::not_found("no such user"))?;
        require_admin_of(&p, &tree, &user.org_unit)?;
        Ok(db.list_devices(&username)?)
    })
    .await?;
    Ok(axum::Json(serde_json::to_value(devices).expect("devices serialise")))
}

/// Revokes a device (shared by the API and the web pages).
pub async fn revoke_device_checked(state: &Shared, by: &Principal, username: String, device_id: String) -> AppResult<()> {
    let db = state.db.clone();
    let ev = audit(by, "device_revoke", format!("{username}/{device_id}"));
    let (by, tree) = (by.clone(), state.db.tree());
    blocking(move || {
        let user = db.get_user(&username)?.ok_or_else(|| AppError::not_found("no such user"))?;
        require_admin_of(&by, &tree, &user.org_unit)?;
        let mut d = db.get_device(&username, &device_id)?.ok_or_else(|| AppError::not_found("no such device"))?;
        d.revoked = true;
        db.put_device(&d, ev)?;
        Ok(())
    })
    .await
}

async fn revoke_device(State(state): State<Shared>, Authed(p): Authed, Path((username, device_id)): Path<(String, String)>) -> AppResult<StatusCode> {
    require_admin(&p)?;
    revoke_device_checked(&state, &p, username, device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_org_units(State(state): State<Shared>, Authed(_p): Authed) -> AppResult<axum::Json<Value>> {
    let tree = state.db.tree();
    Ok(axum::Json(serde_json::to_value(tree.all().collect::<Vec<_>>()).expect("units serialise")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrgUnit {
    pub code: String,
    pub name: String,
    pub parent: Option<String>,
    pub level: Option<String>,
}

/// The level of a unit added or changed: the one given; else the unit's own, when it exists;
/// else from the statistics office's code length (2 digits a province, 3 a district, 5 a
/// commune). Not from its depth: since 2025 a commune may hang directly under a province.
pub fn level_for(tree: &OrgTree, code: &str, given: Option<&str>) -> Result<String, String> {
    if let Some(level) = given.map(str::trim).filter(|l| !l.is_empty()) {
        return Ok(level.to_string());
    }
    if let Some(unit) = tree.get(code) {
        return Ok(unit.level.clone());
    }
    match code.len() {
        2 => Ok("province".into()),
        3 => Ok("district".into()),
        5 => Ok(crate::model::COMMUNE_LEVEL.into()),
        n => Err(format!("the level of a {n}-digit code is not known (2 digits: province, 3: district, 5: commune): give the level")),
    }
}

async fn add_org_unit(State(state): State<Shared>, Authed(p): Authed, JsonBody(b): JsonBody<NewOrgUnit>) -> AppResult<(StatusCode, axum::Json<Value>)> {
    require_admin(&p)?;
    let code: OrgUnitCode = b.code.parse().map_err(|e: sync_protocol::BadOrgUnitCode| AppError::bad_request(e.to_string()))?;
    let tree = state.db.tree();
    let level = level_for(&tree, code.as_str(), b.level.as_deref()).map_err(AppError::bad_request)?;
    let unit = OrgUnit::new(code.to_string(), b.name, b.parent, level);
    state.db.check_org_unit(&unit)?;
    check_org_unit_change(&p, &tree, &unit)?;
    let db = state.db.clone();
    let u2 = unit.clone();
    let ev = audit(&p, "org_unit_put", unit.code.clone());
    blocking(move || Ok(db.put_org_unit(u2, ev)?)).await?;
    Ok((StatusCode::CREATED, axum::Json(serde_json::to_value(unit).expect("unit serialises"))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgUnitMerge {
    pub into: String,
    pub effective: String,
}

/// Merges `code` into `into` from the date `effective` (`YYYY-MM-DD`), for an admin of both
/// units, audited as `org_unit_merge` (shared by the API and the web pages).
pub async fn merge_org_unit_checked(state: &Shared, by: &Principal, code: String, into: String, effective: &str) -> AppResult<Merged> {
    let effective = crate::model::parse_effective(effective).map_err(AppError::bad_request)?;
    let tree = state.db.tree();
    require_admin_of(by, &tree, &code)?;
    require_admin_of(by, &tree, &into)?;
    let db = state.db.clone();
    let ev = audit(by, "org_unit_merge", format!("{code} into {into} from {effective}"));
    blocking(move || Ok(db.merge_org_unit(&code, &into, effective, crate::model::today(), ev)?)).await
}

/// `POST /api/v1/org-units/{code}/merge`: an admin of both units merges one into the other.
async fn merge_org_unit(State(state): State<Shared>, Authed(p): Authed, Path(code): Path<String>, JsonBody(b): JsonBody<OrgUnitMerge>) -> AppResult<axum::Json<Value>> {
    let merged = merge_org_unit_checked(&state, &p, code, b.into, &b.effective).await?;
    Ok(axum::Json(serde_json::to_value(merged).expect("merge serialises")))
}

async fn set_target(
    State(state): State<Shared>,
    Authed(p): Authed,
    Path((org_unit, indicator)): Path<(String, String)>,
    JsonBody(body): JsonBody<std::collections::BTreeMap<String, f64>>,
) -> AppResult<StatusCode> {
    require_admin(&p)?;
    let ind: IndicatorId = indicator.parse().map_err(|e: indicators::UnknownIndicator| AppError::bad_request(e.to_string()))?;
    let mut pairs = Vec::new();
    for (year, v) in body {
        let y: i32 = year.parse().map_err(|_| AppError::bad_request(format!("target keys are milestone years such as \"2025\", not `{}`", year.chars().take(10).collect::<String>())))?;
        pairs.push((y, v));
    }
    let m = Milestones::new(pairs).map_err(|e| AppError::bad_request(e.to_string()))?;
    require_admin_of(&p, &state.db.tree(), &org_unit)?;
    let db = state.db.clone();
    let ev = audit(&p, "target_set", format!("{org_unit}/{ind}"));
    blocking(move || Ok(db.set_target(&org_unit, ind, &m, ev)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

async fn audit_log(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<AuditQuery>) -> AppResult<axum::Json<Value>> {
    require_admin(&p)?;
    let db = state.db.clone();
    let (entries, chain) = blocking(move || Ok((db.audit_since(q.since.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000))?, db.verify_audit_chain()?))).await?;
    let chain = match chain {
        Ok(n) => json!({"valid": true, "entries": n}),
        Err(seq) => json!({"valid": false, "broken_at": seq}),
    };
    Ok(axum::Json(json!({"entries": entries, "chain": chain})))
}

// ---- records, figures ------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsQuery {
    org_unit: Option<String>,
    kind: Option<String>,
    period: Option<String>,
}

fn parse_period(s: &str) -> AppResult<Period> {
    s.parse::<Period>().map_err(|e| AppError::bad_request(e.to_string()))
}

async fn list_records(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<RecordsQuery>) -> AppResult<axum::Json<Value>> {
    let tree = state.db.tree();
    let unit = q.org_unit.clone().unwrap_or_else(|| p.org_unit.clone());
    if tree.get(&unit).is_none() {
        return Err(AppError::not_found("unknown org unit"));
    }
    if !p.sees_records() {
        return Err(AppError::forbidden("your role sees figures, not individual records"));
    }
    if !tree.is_within(&unit, &p.org_unit) {
        return Err(AppError::forbidden("that org unit is outside your scope"));
    }
    let kind: Option<RecordKind> = q.kind.as_deref().map(str::parse).transpose().map_err(|e: sync_protocol::SchemaError| AppError::bad_request(e.to_string()))?;
    let period = q.period.as_deref().map(parse_period).transpose()?;
    let communes: Vec<String> = tree.record_communes_under(&unit).into_iter().filter(|c| p.may_access_records_of(&tree, c)).collect();
    let db = state.db.clone();
    let ev = p.reads_are_audited().then(|| audit(&p, "records_list", unit.clone())).flatten();
    let out = blocking(move || {
        let mut out = Vec::new();
        for c in communes {
            for id in db.record_ids_of(&c)? {
                let Some(meta) = db.get_meta(&id)? else { continue };
                if kind.is_some_and(|k| k != meta.kind) {
                    continue;
                }
                if let Some(per) = period {
                    let inside = meta.date.as_deref().and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()).is_some_and(|d| per.contains(d));
                    if !inside {
                        continue;
                    }
                }
                if let Some(v) = db.record_view(&id)? {
                    out.push(v);
                }
            }
        }
        if let Some(ev) = ev {
            db.audit(ev)?;
        }
        Ok(out)
    })
    .await?;
    Ok(axum::Json(Value::Array(out)))
}

async fn get_record(State(state): State<Shared>, Authed(p): Authed, Path(id): Path<String>) -> AppResult<axum::Json<Value>> {
    let id: RecordId = id.parse().map_err(|e: sync_protocol::BadRecordId| AppError::bad_request(e.to_string()))?;
    let db = state.db.clone();
    let tree = db.tree();
    let view = blocking(move || {
        // Same answer for "absent" and "not yours": existence is not revealed outside scope.
        let meta = db.get_meta(&id)?.filter(|m| p.may_access_records_of(&tree, &m.commune)).ok_or_else(|| AppError::not_found("no such record in your scope"))?;
        if p.reads_are_audited() {
            db.audit(audit(&p, "record_read", format!("{id} ({})", meta.commune)).expect("event"))?;
        }
        db.record_view(&id)?.ok_or_else(|| AppError::not_found("no such record in your scope"))
    })
    .await?;
    Ok(axum::Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FiguresQuery {
    org_unit: Option<String>,
    period: String,
}

fn check_figures_scope(state: &AppState, p: &Principal, unit: &str) -> AppResult<()> {
    let tree = state.db.tree();
    if tree.get(unit).is_none() {
        return Err(AppError::not_found("unknown org unit"));
    }
    if !p.may_read_figures_of(&tree, unit) {
        return Err(AppError::forbidden("that org unit is outside your scope"));
    }
    Ok(())
}

async fn get_indicators(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<FiguresQuery>) -> AppResult<axum::Json<Value>> {
    let period = parse_period(&q.period)?;
    let unit = q.org_unit.unwrap_or_else(|| p.org_unit.clone());
    check_figures_scope(&state, &p, &unit)?;
    let db = state.db.clone();
    let report = blocking(move || Ok(db.indicators(&unit, period)?)).await?;
    Ok(axum::Json(serde_json::to_value(report).expect("report serialises")))
}

/// The report's rows (the CSV's and the workbook's): each commune under `unit`, then each level
/// above it up to `unit`.
pub fn report_rows(db: &Db, unit: &str, period: Period) -> Result<Vec<indicators::CsvRow>, crate::db::DbError> {
    let tree = db.tree();
    let mut rows = Vec::new();
    let communes = tree.communes_under(unit);
    // Non-commune units under `unit`, deepest first, then `unit` itself.
    let mut above: Vec<String> = Vec::new();
    for c in &communes {
        for a in tree.chain(c).into_iter().skip(1) {
            if !above.contains(&a) && tree.is_within(&a, unit) {
                above.push(a);
            }
        }
    }
    above.sort_by_key(|a| std::cmp::Reverse(tree.chain(a).len()));
    if !above.contains(&unit.to_string()) && !communes.contains(&unit.to_string()) {
        above.push(unit.to_string());
    }
    for code in communes.iter().chain(above.iter()) {
        let u = tree.get(code).expect("unit from the tree");
        rows.push(indicators::CsvRow { code: u.code.clone(), name: u.name.clone(), level: u.level.clone(), report: db.indicators(code, period)? });
    }
    Ok(rows)
}

/// `GET /api/v1/reports/{org_unit}/{period}.csv` or `.xlsx`: the report rows as a file.
async fn report_file(State(state): State<Shared>, Authed(p): Authed, Path((unit, file)): Path<(String, String)>) -> AppResult<Response> {
    let (period, format) = ReportFormat::split(&file).ok_or_else(|| AppError::not_found(crate::report_file::FILE_NAMES))?;
    let period = parse_period(period)?;
    check_figures_scope(&state, &p, &unit)?;
    let db = state.db.clone();
    let ev = audit(&p, "report_export", format!("{unit}/{period}"));
    let u2 = unit.clone();
    let bytes = blocking(move || {
        let rows = report_rows(&db, &u2, period)?;
        db.audit(ev.expect("event"))?;
        format.render(&rows)
    })
    .await?;
    format.response(&unit, period, bytes)
}

/// `?org_unit=&period=`, both optional (the caller's unit; every or the current period).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitPeriodQuery {
    org_unit: Option<String>,
    period: Option<String>,
}

/// Which reports are due for an org unit, and which communes have sent nothing in the period.
async fn calendar(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<UnitPeriodQuery>) -> AppResult<axum::Json<Value>> {
    let unit = q.org_unit.unwrap_or_else(|| p.org_unit.clone());
    check_figures_scope(&state, &p, &unit)?;
    let today = chrono::Utc::now().date_naive();
    let period = match q.period {
        Some(s) => parse_period(&s)?,
        None => Period::whole_year(today.format("%Y").to_string().parse().unwrap_or(2025)).map_err(|e| AppError::bad_request(e.to_string()))?,
    };
    let db = state.db.clone();
    let out = blocking(move || Ok(db.calendar_status(&unit, period, today)?)).await?;
    Ok(axum::Json(out))
}

// ---- review: conflicts, duplicates, approvals -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitQuery {
    org_unit: Option<String>,
}

async fn list_conflicts(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<UnitQuery>) -> AppResult<axum::Json<Value>> {
    let unit = q.org_unit.unwrap_or_else(|| p.org_unit.clone());
    let db = state.db.clone();
    let list = blocking(move || Ok(db.conflicts_under(&p, &unit)?)).await?;
    Ok(axum::Json(serde_json::to_value(list).expect("conflicts serialise")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    value: Value,
}

async fn resolve_conflict(State(state): State<Shared>, Authed(p): Authed, Path(id): Path<String>, JsonBody(b): JsonBody<ResolveBody>) -> AppResult<StatusCode> {
    let db = state.db.clone();
    blocking(move || Ok(db.resolve_conflict(&p, &id, &b.value)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_duplicates(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<UnitQuery>) -> AppResult<axum::Json<Value>> {
    let unit = q.org_unit.unwrap_or_else(|| p.org_unit.clone());
    let db = state.db.clone();
    let list = blocking(move || {
        let list = db.duplicates_under(&p, &unit)?;
        db.audit(AuditEvent { user: p.username.clone(), device_id: Some(p.device_id.clone()), action: "duplicates_list", target: unit })?;
        Ok(list)
    })
    .await?;
    Ok(axum::Json(serde_json::to_value(list).expect("pairs serialise")))
}

async fn dismiss_duplicate(State(state): State<Shared>, Authed(p): Authed, Path(id): Path<String>) -> AppResult<StatusCode> {
    let db = state.db.clone();
    blocking(move || Ok(db.mark_not_duplicate(&p, &id)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeBody {
    keep: String,
}

async fn merge_duplicate(State(state): State<Shared>, Authed(p): Authed, Path(id): Path<String>, JsonBody(b): JsonBody<MergeBody>) -> AppResult<StatusCode> {
    let keep: RecordId = b.keep.parse().map_err(|e: sync_protocol::BadRecordId| AppError::bad_request(e.to_string()))?;
    let db = state.db.clone();
    blocking(move || Ok(db.merge_duplicates(&p, &id, keep)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Approvals under a unit, each with the figures approved and the current ones beside them.
async fn list_approvals(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<UnitPeriodQuery>) -> AppResult<axum::Json<Value>> {
    let unit = q.org_unit.unwrap_or_else(|| p.org_unit.clone());
    check_figures_scope(&state, &p, &unit)?;
    let period = q.period.as_deref().map(parse_period).transpose()?;
    let db = state.db.clone();
    let out = blocking(move || {
        let mut out = Vec::new();
        for a in db.approvals_under(&unit)? {
            if period.is_some_and(|per| per.to_string() != a.period) {
                continue;
            }
            let per = parse_period(&a.period)?;
            let current = serde_json::to_value(db.indicators(&a.org_unit, per)?).expect("report serialises");
            let mut v = serde_json::to_value(&a).expect("approval serialises");
            v["current_figures"] = current;
            v["changed_since_approval"] = Value::Bool(a.changes_after > 0);
            out.push(v);
        }
        Ok(out)
    })
    .await?;
    Ok(axum::Json(Value::Array(out)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    org_unit: String,
    period: String,
}

async fn approve_period(State(state): State<Shared>, Authed(p): Authed, JsonBody(b): JsonBody<ApproveBody>) -> AppResult<(StatusCode, axum::Json<Value>)> {
    let period = parse_period(&b.period)?;
    let db = state.db.clone();
    let a = blocking(move || Ok(db.approve(&p, &b.org_unit, period)?)).await?;
    Ok((StatusCode::CREATED, axum::Json(serde_json::to_value(a).expect("approval serialises"))))
}

// ---- sync ------------------------------------------------------------------------------------

/// The caller of a sync, holding one of its [`SYNCS_PER_USER`] slots from before the body is
/// read until the answer is made (429 with `Retry-After` when none is free).
pub struct SyncSlot {
    p: Principal,
    state: Shared,
}

impl FromRequestParts<Shared> for SyncSlot {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Self::Rejection> {
        let Authed(p) = Authed::from_request_parts(parts, state).await?;
        let mut in_flight = state.syncs_in_flight.lock().expect("sync slots");
        let n = in_flight.entry(p.username.clone()).or_insert(0);
        if *n >= SYNCS_PER_USER {
            let mut e = AppError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManySyncs, "this account already has syncs in progress: try again shortly");
            e.retry_after = Some(2);
            return Err(e);
        }
        *n += 1;
        Ok(SyncSlot { p, state: state.clone() })
    }
}

impl Drop for SyncSlot {
    fn drop(&mut self) {
        let mut in_flight = self.state.syncs_in_flight.lock().expect("sync slots");
        if let Some(n) = in_flight.get_mut(&self.p.username) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.p.username);
            }
        }
    }
}

/// Sets its flag when dropped: the handler holding it was abandoned (or finished).
struct SetOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn sync(
    State(state): State<Shared>,
    slot: SyncSlot,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> AppResult<Response> {
    let p = slot.p.clone();
    let _record = scopeguard_histogram("gesync_sync_seconds", std::time::Instant::now());
    let body = body?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct != CONTENT_TYPE {
        return Err(AppError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::BadContentType, format!("sync bodies must be sent as {CONTENT_TYPE}")));
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(AppError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, format!("sync bodies are at most {MAX_MESSAGE_BYTES} bytes")));
    }
    let (req, framing) = SyncRequest::decode_framed(&body).map_err(|e| AppError::new(StatusCode::BAD_REQUEST, ErrorCode::BadSyncMessage, e.to_string()))?;
    crate::records::check_request(&req).map_err(|e| AppError::new(StatusCode::BAD_REQUEST, ErrorCode::BadSyncMessage, e))?;
    // The answer goes in the phone's own protocol version, compressed if it reads zstd.
    let answer = framing.answer(&req);
    let m = &state.metrics;
    m.sync_requests.fetch_add(1, Ordering::Relaxed);
    m.sync_bytes_in.fetch_add(body.len() as u64, Ordering::Relaxed);
    let db = state.db.clone();
    // Work a client no longer waits for stops between records (the slot is freed with it).
    let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _abandon_on_drop = SetOnDrop(abandoned.clone());
    let (resp, bytes) = blocking(move || {
        let resp = db.sync_unless(&p, &req, &abandoned)?;
        // Staff above a commune reading records through sync is audited as `GET /records` is:
        // who, where, how many; never what.
        let pulled = resp.pull.len() + usize::from(resp.part.as_ref().is_some_and(|part| part.offset + part.bytes.len() as u64 == part.total));
        if p.reads_are_audited() && pulled > 0 {
            db.audit(AuditEvent { user: p.username.clone(), device_id: Some(p.device_id.clone()), action: "sync_pull", target: format!("{}: {pulled} records", p.org_unit) })?;
        }
        let bytes = resp.encode_as(answer); // compressing is CPU work: off the async threads too
        Ok((resp, bytes))
    })
    .await?;
    for r in &resp.results {
        match r.outcome {
            sync_protocol::wire::PushOutcome::Accepted => m.records_accepted.fetch_add(1, Ordering::Relaxed),
            _ => m.records_rejected.fetch_add(1, Ordering::Relaxed),
        };
    }
    m.sync_bytes_out.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], bytes).into_response())
}

/// The process's Prometheus recorder, installed once: the latency histograms
/// (`gesync_sync_seconds`, `gesync_login_seconds`) are recorded through the `metrics` crate.
fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
            .expect("bucket bounds are given")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (an embedding program's) keeps its place.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// `/metrics` shows who uses the system how much: the monitoring token, or an admin.
fn require_metrics_reader(state: &Shared, headers: &HeaderMap) -> AppResult<()> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let Some(bearer) = bearer else {
        return Err(AppError::unauthorized("missing `Authorization: Bearer <token>` header"));
    };
    if let Some(token) = &state.metrics_token {
        use sha2::Digest;
        // Compared as hashes: the time taken says nothing about the token.
        if sha2::Sha256::digest(bearer.as_bytes()) == sha2::Sha256::digest(token.as_bytes()) {
            return Ok(());
        }
    }
    require_admin(&principal_from_token(state, bearer)?)
}

async fn metrics(State(state): State<Shared>, headers: HeaderMap) -> AppResult<Response> {
    require_metrics_reader(&state, &headers)?;
    let m = &state.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let body = format!(
        "# TYPE gesync_sync_requests_total counter\ngesync_sync_requests_total {}\n\
         # TYPE gesync_sync_bytes_in_total counter\ngesync_sync_bytes_in_total {}\n\
         # TYPE gesync_sync_bytes_out_total counter\ngesync_sync_bytes_out_total {}\n\
         # TYPE gesync_records_accepted_total counter\ngesync_records_accepted_total {}\n\
         # TYPE gesync_records_rejected_total counter\ngesync_records_rejected_total {}\n\
         # TYPE gesync_logins_total counter\ngesync_logins_total {}\n\
         # TYPE gesync_login_failures_total counter\ngesync_login_failures_total {}\n\
         # TYPE gesync_logins_refused_total counter\ngesync_logins_refused_total {}\n\
         # TYPE gesync_refresh_failures_total counter\ngesync_refresh_failures_total {}\n\
         # TYPE gesync_feed_sequence gauge\ngesync_feed_sequence {}\n\
         # TYPE gesync_store_bytes gauge\ngesync_store_bytes {}\n",
        g(&m.sync_requests),
        g(&m.sync_bytes_in),
        g(&m.sync_bytes_out),
        g(&m.records_accepted),
        g(&m.records_rejected),
        g(&m.logins),
        g(&m.login_failures),
        g(&m.logins_refused),
        g(&m.refresh_failures),
        state.db.durable_seq(),
        state.db.kv().size_on_disk(),
    ) + &prometheus().render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

#[cfg(test)]
mod token_tests {
    use super::*;
    use crate::store::MemKv;

    #[test]
    fn a_token_for_a_device_the_server_does_not_know_is_refused() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let user = User { username: "officer".into(), role: Role::CommuneOfficer, org_unit: "04701".into(), password_hash: String::new(), disabled: false, session_epoch: 0 };
        db.put_user(&user, true, None).unwrap();
        let state = AppState::new(db.clone()).unwrap();
        let p = Principal { username: "officer".into(), role: Role::CommuneOfficer, org_unit: "04701".into(), device_id: "phone-1".into() };
        let token = state.keys.issue_access(&p, 0, None);
        let refused = principal_from_token(&state, &token).err().expect("no device record: refused");
        assert_eq!((refused.status, refused.code), (StatusCode::FORBIDDEN, ErrorCode::DeviceRevoked));
        let now = now_secs();
        db.put_device(&Device { username: "officer".into(), device_id: "phone-1".into(), first_seen: now, last_seen: now, revoked: false }, None).unwrap();
        assert_eq!(principal_from_token(&state, &token).unwrap().device_id, "phone-1");
    }
}

#[cfg(test)]
mod client_address_tests {
    use super::*;

    #[test]
    fn forwarded_addresses_are_believed_only_from_a_trusted_proxy() {
        let lb: IpAddr = "10.1.1.1".parse().unwrap();
        let phone: IpAddr = "203.0.113.9".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 203.0.113.9".parse().unwrap());
        // From the load balancer: the last address it added; what the client wrote before is ignored.
        assert_eq!(client_address(lb, &h, &[lb]), phone);
        // From anyone else the header is the client's own words.
        assert_eq!(client_address(phone, &h, &[lb]), phone);
        assert_eq!(client_address(phone, &h, &[]), phone);
        // Two proxies in a row; a header that does not parse is ignored.
        let inner: IpAddr = "10.1.1.2".parse().unwrap();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.1.1".parse().unwrap());
        assert_eq!(client_address(inner, &h, &[lb, inner]), phone);
        h.insert("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(client_address(lb, &h, &[lb]), lb);
    }
}
