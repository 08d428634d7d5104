//! Logging in and out: `POST /api/v1/auth/login`, `/refresh` and `/logout`, and `GET /api/v1/me`.
//! [`authenticate`] is shared with the web login, as is [`ClientIp`] (the address the throttle
//! counts); the argon2 hashing permits (a bounded queue, 503 past it) are handed out here, for
//! logins and for the passwords admins set.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use sync_protocol::ErrorCode;

use crate::auth::{self, valid_username, RefreshError};
use crate::db::{now_secs, AuditEvent};
use crate::error::{AppError, AppResult};
use crate::model::Principal;
use crate::throttle::Caller;

use super::{account_disabled, audit, blocking, device_revoked, scopeguard_histogram, Authed, JsonBody, Shared, HASH_QUEUE_PER_ADDRESS, HASH_WAIT, MAX_HASH_QUEUE};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    username: String,
    password: String,
    device_id: Option<String>,
    /// The proof this device was given at its last login here (see `Keys::device_proof`).
    device_proof: Option<String>,
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
    let (refresh, family) = blocking(move || Ok(db.refresh_tokens().issue_refresh(&u, &d, epoch)?)).await?;
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
pub async fn authenticate(state: &Shared, ip: IpAddr, username: &str, password: &str, device_id: &str, device_proof: Option<&str>) -> AppResult<(Principal, u64)> {
    let denied = || AppError::unauthorized("wrong username or password, or the account is disabled");
    if !valid_username(username) || password.len() > MAX_PASSWORD_BYTES {
        state.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
        return Err(denied());
    }
    let (user, known_device) = {
        let db = state.db.clone();
        let (u, d) = (username.to_string(), device_id.to_string());
        blocking(move || {
            let user = db.accounts().get_user(&u)?;
            let known = match &user {
                Some(user) => db.accounts().get_device(&user.username, &d)?.is_some_and(|dev| !dev.revoked),
                None => false,
            };
            Ok((user, known))
        })
        .await?
    };
    // A device id is no secret; its proof is, and only a live device of this account has one.
    let caller = match (known_device, device_proof) {
        (true, Some(proof)) if state.keys.is_device_proof(username, device_id, proof) => Caller::ProvenDevice(device_id),
        _ => Caller::Anyone,
    };
    let attempt = state.throttle.admit(username, ip, caller).map_err(|wait| {
        state.metrics.logins_refused.fetch_add(1, Ordering::Relaxed);
        let mut e = AppError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::Throttled, "too many failed logins: wait before trying again");
        e.retry_after = Some(wait.as_secs().max(1));
        e
    })?;
    let permit = match hashing_permit(state, ip).await {
        Ok(permit) => permit,
        Err(e) => {
            attempt.withdrawn();
            return Err(e);
        }
    };
    state.metrics.password_checks.fetch_add(1, Ordering::Relaxed);
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
            blocking(move || Ok(db.audit_log().audit(ev)?)).await?;
            return Err(denied());
        }
    };
    attempt.succeeded();
    let db = state.db.clone();
    let (un, dev) = (user.username.clone(), device_id.to_string());
    let ev = AuditEvent { user: user.username.clone(), device_id: Some(device_id.to_string()), action: "login", target: ip.to_string() };
    blocking(move || match db.accounts().login_device(&un, &dev, now_secs(), Some(ev))? {
        true => Ok(()),
        false => Err(device_revoked()),
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
pub(super) async fn hash_new_password(state: &Shared, password: String) -> AppResult<String> {
    let permit = state.hashing.clone().acquire_owned().await.map_err(|_| AppError::internal())?;
    Ok(tokio::task::spawn_blocking(move || {
        let _permit = permit;
        auth::hash_password(&password)
    })
    .await?)
}

/// One of the argon2 permits, or 503 with `Retry-After` when too many logins already wait, in
/// all or from `ip`'s address group (one place may hold [`HASH_QUEUE_PER_ADDRESS`] of the
/// queue's places: a burst of made-up names from one address no longer makes an officer
/// elsewhere wait behind it).
async fn hashing_permit(state: &Shared, ip: IpAddr) -> AppResult<tokio::sync::OwnedSemaphorePermit> {
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
    let Some(_place) = AddressPlace::take(&state.hash_queue_by_address, crate::conn::client_group(ip)) else {
        return Err(busy(waiting));
    };
    match tokio::time::timeout(HASH_WAIT, state.hashing.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(AppError::internal()),
        Err(_) => Err(busy(state.hash_queue.load(Ordering::Acquire))),
    }
}

/// One of an address group's places in the hashing queue, given back when dropped.
struct AddressPlace<'a> {
    by_address: &'a std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    ip: IpAddr,
}

impl<'a> AddressPlace<'a> {
    fn take(by_address: &'a std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>, ip: IpAddr) -> Option<Self> {
        let mut map = by_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= HASH_QUEUE_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(AddressPlace { by_address, ip })
    }
}

impl Drop for AddressPlace<'_> {
    fn drop(&mut self) {
        let mut map = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
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

pub(super) async fn login(State(state): State<Shared>, ClientIp(ip): ClientIp, JsonBody(body): JsonBody<LoginBody>) -> AppResult<Response> {
    let _record = scopeguard_histogram("gesync_login_seconds", std::time::Instant::now());
    // A login that names no device (a script) gets a session the server names, which may be
    // retired when the account has too many devices in use.
    let device_id = body.device_id.unwrap_or_else(|| format!("api-{}", uuid::Uuid::new_v4().simple()));
    if !valid_device_id(&device_id) {
        return Err(AppError::bad_request("device_id must be 1 to 64 letters, digits, '-' or '_'"));
    }
    if body.device_proof.as_ref().is_some_and(|p| p.len() > 64) {
        return Err(AppError::bad_request("device_proof is at most 64 characters"));
    }
    let (p, epoch) = authenticate(&state, ip, &body.username, &body.password, &device_id, body.device_proof.as_deref()).await?;
    let mut answer = tokens_response(&state, &p, epoch).await?;
    answer["device_proof"] = json!(state.keys.device_proof(&p.username, &p.device_id));
    Ok(axum::Json(answer).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshBody {
    refresh_token: String,
}

pub(super) async fn refresh(State(state): State<Shared>, ClientIp(ip): ClientIp, JsonBody(body): JsonBody<RefreshBody>) -> AppResult<Response> {
    state.throttle.admit_refresh(ip).map_err(|wait| {
        let mut e = AppError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::Throttled, "too many refused refresh tokens: wait before trying again");
        e.retry_after = Some(wait.as_secs().max(1));
        e
    })?;
    let db = state.db.clone();
    let token = body.refresh_token;
    let used = blocking(move || Ok(db.refresh_tokens().use_refresh(&token)?)).await?;
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
                    blocking(move || Ok(db.audit_log().audit(ev)?)).await?;
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
    let (user, device) = blocking(move || Ok((db.accounts().get_user(&u)?, db.accounts().get_device(&u, &d)?))).await?;
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
        blocking(move || Ok(db.refresh_tokens().revoke_refresh_family(&family)?)).await?;
        return Err(AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::SessionEnded, "the account changed since this login (password, role or org unit): log in again"));
    }
    let p = Principal { username: user.username.clone(), role: user.role, org_unit: user.org_unit.clone(), device_id: rotation.device_id };
    let db = state.db.clone();
    let ev = audit(&p, "token_refresh", "");
    blocking(move || Ok(db.audit_log().audit(ev.expect("event"))?)).await?;
    Ok(axum::Json(tokens_json(state.keys.issue_access(&p, user.session_epoch, Some(&rotation.family)), rotation.token)).into_response())
}

pub(super) async fn logout(State(state): State<Shared>, Authed(p): Authed, JsonBody(body): JsonBody<RefreshBody>) -> AppResult<StatusCode> {
    let db = state.db.clone();
    blocking(move || {
        db.refresh_tokens().revoke_refresh_family_of(&body.refresh_token)?;
        db.audit_log().audit(audit(&p, "logout", "").expect("event"))?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn me(Authed(p): Authed) -> axum::Json<Value> {
    axum::Json(json!({"username": p.username, "role": p.role, "org_unit": p.org_unit, "device_id": p.device_id}))
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
