//! The HTTP API of `contract.md`. Handlers are thin: extract, ask the policy in `model.rs`,
//! call the data layer on the blocking pool, map the result. This file holds what every handler
//! shares: the state ([`AppState`]), the extractors ([`Authed`], [`JsonBody`], [`Q`]), the admin
//! and scope checks, auditing, the blocking pool and the routers; the handlers live in one file
//! per resource (`auth`, `users`, `org_units`, `records`, `figures`, `review`, `sync`, `ops`).

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::routing::{get, patch, post, put};
use axum::Router;
use indicators::Period;
use serde::Deserialize;
use sync_protocol::ErrorCode;

use crate::auth::{Keys, TokenError};
use crate::throttle::Throttle;
use crate::db::{AuditEvent, Db};
use crate::error::{AppError, AppResult};
use crate::model::{OrgTree, OrgUnit, Principal, Role};

mod auth;
mod figures;
mod ops;
mod org_units;
mod page_contexts;
mod records;
mod review;
mod sync;
mod users;

pub use auth::{authenticate, ClientIp};
pub(crate) use ops::audit_chain;
pub use figures::report_rows;
pub use org_units::{level_for, merge_org_unit_checked, NewOrgUnit, OrgUnitMerge};
pub use sync::SyncSlot;
pub use users::{create_user_checked, revoke_device_checked, update_user_checked, NewUserInput, UserPatch};

use auth::{login, logout, me, refresh};
use figures::{calendar, get_indicators, report_file};
use ops::{audit_log, healthz, metrics};
use org_units::{add_org_unit, list_org_units, merge_org_unit, set_target};
use records::{get_record, list_records};
use review::{approve_period, dismiss_duplicate, list_approvals, list_conflicts, list_duplicates, merge_duplicate, resolve_conflict};
use sync::sync;
use users::{create_user, list_devices, list_users, revoke_device, update_user};

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
    /// Of those, how many per address group (bounded by [`HASH_QUEUE_PER_ADDRESS`]).
    pub hash_queue_by_address: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    /// Connection and request limits (see [`crate::conn`]).
    pub limits: crate::conn::Limits,
    /// Proxies whose `X-Forwarded-For` names the client (see [`ClientIp`]).
    pub trusted_proxies: Vec<IpAddr>,
    /// Sync requests in flight per user (see [`SyncSlot`]).
    pub syncs_in_flight: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Syncs worked on at once ([`sync_work_permits`]): the rest wait for a permit holding
    /// only their body, not a thread with their merged documents.
    pub sync_work: Arc<tokio::sync::Semaphore>,
    /// The page contexts kept for phones on a slow link (see [`page_contexts`]).
    pub page_contexts: page_contexts::PageContexts,
    /// The bearer token a monitoring system presents at `/metrics` (`GESYNC_METRICS_TOKEN`);
    /// without one, only an admin's access token reads it.
    pub metrics_token: Option<String>,
    /// The file outside the store where each signed audit checkpoint is written as it is made
    /// (`--audit-witness`): a tail cut off the audit log together with its checkpoints shows
    /// against it (see `crate::db::AuditCheckpoint`).
    pub audit_witness: Option<std::path::PathBuf>,
    /// What the full store check run after start found (`None` until it ends): `/healthz` says
    /// it (see `crate::check`).
    pub store_check: std::sync::Mutex<Option<String>>,
}

/// Sync requests one user may have in flight at once: a phone syncs one page at a time, so a
/// few cover a user's devices; more is one account making the server work for many.
pub const SYNCS_PER_USER: usize = 4;

/// Syncs worked on at once (merged, written, read, encoded on the blocking pool): four a core,
/// at least 8. A sync's work is CPU and one store's write lock, so more at once only adds
/// threads waiting, each holding its request's documents: with 1,000 phones at the same
/// instant, hundreds of them.
pub fn sync_work_permits() -> usize {
    cores().saturating_mul(4).max(8)
}

/// The cores this process may run on (read once).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Argon2 hashes run at once (48 MiB each).
const HASHING_PERMITS: usize = 2;
/// Logins that may wait for a hashing permit; more are answered 503 at once.
const MAX_HASH_QUEUE: usize = 400;
/// Places in that queue one address group may hold: a carrier NAT's officers still fill both
/// permits from them, and one place cannot push everyone else out.
const HASH_QUEUE_PER_ADDRESS: usize = 32;
/// Longest a login waits for a hashing permit before it is answered 503.
const HASH_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Counters exported at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub sync_requests: AtomicU64,
    /// Sync requests from phones that measured their link as slow (`FLAG_SLOW_LINK`).
    pub sync_slow_link_requests: AtomicU64,
    /// Answers compressed against the page context their request named, and requests that
    /// named one this process no longer holds (dropped, or kept by another replica).
    pub sync_page_context_hits: AtomicU64,
    pub sync_page_context_misses: AtomicU64,
    pub sync_bytes_in: AtomicU64,
    pub sync_bytes_out: AtomicU64,
    /// Syncs being worked on now (holding a [`sync_work_permits`] permit), and the most at once
    /// since the server started.
    pub syncs_working: AtomicU64,
    pub syncs_working_peak: AtomicU64,
    pub records_accepted: AtomicU64,
    pub records_rejected: AtomicU64,
    pub login_failures: AtomicU64,
    /// Passwords checked with argon2 (a malformed user name, a throttled or a refused attempt
    /// is answered without one).
    pub password_checks: AtomicU64,
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
        Self::with_config(db, limits, Vec::new(), None, None)
    }

    pub fn with_config(db: Db, limits: crate::conn::Limits, trusted_proxies: Vec<IpAddr>, metrics_token: Option<String>, audit_witness: Option<std::path::PathBuf>) -> Result<Shared, crate::db::DbError> {
        let keys = Keys::load(&db)?;
        prometheus();
        Ok(Arc::new(AppState {
            db,
            keys,
            throttle: Throttle::default(),
            metrics: Metrics::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(HASHING_PERMITS)),
            hash_queue: std::sync::atomic::AtomicUsize::new(0),
            hash_queue_by_address: Default::default(),
            limits,
            trusted_proxies,
            syncs_in_flight: Default::default(),
            sync_work: Arc::new(tokio::sync::Semaphore::new(sync_work_permits())),
            page_contexts: Default::default(),
            metrics_token: metrics_token.filter(|t| !t.is_empty()),
            audit_witness,
            store_check: std::sync::Mutex::new(None),
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
        Ok(Authed(principal_from_bearer(state, token).await?))
    }
}

/// [`principal_from_token`]: it reads the user, the refresh family and the device from the
/// store. On a store of this process (sled, whose cache holds them after the first request, or
/// memory) that is three lookups of a few microseconds, made here: handing them to a blocking
/// thread and back cost each request two thread switches, more than the lookups. On a shared
/// store (PostgreSQL) they wait on the network: off the async workers.
pub async fn principal_from_bearer(state: &Shared, token: &str) -> AppResult<Principal> {
    if state.db.store_in_process() {
        return principal_from_token(state, token);
    }
    let (state, token) = (state.clone(), token.to_string());
    tokio::task::spawn_blocking(move || principal_from_token(&state, &token)).await?
}

/// Verifies an access token and the current state of its user and device.
pub fn principal_from_token(state: &AppState, token: &str) -> AppResult<Principal> {
    let claims = state.keys.verify_access(token).map_err(|e| match e {
        TokenError::Expired => AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired, "access token expired: refresh it or log in again"),
        TokenError::Invalid => AppError::unauthorized("invalid access token"),
    })?;
    let user = state.db.accounts().get_user(&claims.sub)?.ok_or_else(|| AppError::unauthorized("invalid access token"))?;
    if user.disabled {
        return Err(account_disabled());
    }
    if user.session_epoch != claims.ep || (!claims.fam.is_empty() && state.db.refresh_tokens().refresh_family_revoked(&claims.fam)?) {
        return Err(AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::SessionEnded, "this session has ended: log in again"));
    }
    // Fails closed: a token whose device is not (or no longer) registered is treated as revoked,
    // as refresh and the web sessions treat it.
    if !crate::model::device_is_live(state.db.accounts().get_device(&user.username, &claims.dev)?.as_ref()) {
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
        .route("/healthz", get(healthz))
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

fn parse_period(s: &str) -> AppResult<Period> {
    s.parse::<Period>().map_err(|e| AppError::bad_request(e.to_string()))
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

/// `?org_unit=&period=`, both optional (the caller's unit; every or the current period).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitPeriodQuery {
    org_unit: Option<String>,
    period: Option<String>,
}

/// Records the time since `started` in histogram `name` when dropped (however the handler ends),
/// and notes that the server worked ([`crate::heap::worked`]: freed memory is handed back only
/// once it has been quiet a moment).
fn scopeguard_histogram(name: &'static str, started: std::time::Instant) -> impl Drop {
    struct Timer(&'static str, std::time::Instant);
    impl Drop for Timer {
        fn drop(&mut self) {
            metrics::histogram!(self.0).record(self.1.elapsed().as_secs_f64());
            crate::heap::worked();
        }
    }
    Timer(name, started)
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

#[cfg(test)]
mod token_tests {
    use super::*;
    use crate::store::MemKv;
    use crate::db::now_secs;
    use crate::model::{Device, User};

    #[test]
    fn a_token_for_a_device_the_server_does_not_know_is_refused() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        let user = User { username: "officer".into(), role: Role::CommuneOfficer, org_unit: "04701".into(), password_hash: String::new(), disabled: false, session_epoch: 0 };
        db.accounts().put_user(&user, true, None).unwrap();
        let state = AppState::new(db.clone()).unwrap();
        let p = Principal { username: "officer".into(), role: Role::CommuneOfficer, org_unit: "04701".into(), device_id: "phone-1".into() };
        let token = state.keys.issue_access(&p, 0, None);
        let refused = principal_from_token(&state, &token).expect_err("no device record: refused");
        assert_eq!((refused.status, refused.code), (StatusCode::FORBIDDEN, ErrorCode::DeviceRevoked));
        let now = now_secs();
        db.accounts().put_device(&Device { username: "officer".into(), device_id: "phone-1".into(), first_seen: now, last_seen: now, revoked: false }, None).unwrap();
        assert_eq!(principal_from_token(&state, &token).unwrap().device_id, "phone-1");
    }
}
