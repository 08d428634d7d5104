//! The sync driven by the app, which owns the HTTP stack and the scheduler: the library says
//! which request to make ([`SyncStep::Send`]), the app makes it and hands back the answer, and
//! the library applies it (client-core's `Session` over the SDK's store). What a refusal means
//! is the core's `Refusal`, as in every other driver: a revoked device or a disabled account
//! wipes the store, an expired access token is refreshed once (the refresh is one more request
//! the app makes), a transient failure becomes [`SyncStep::Wait`] with the backoff to wait.
//!
//! ```text
//!   begin_sync()
//!   loop next_step():
//!     Send(request) -> app makes it -> answer(status, body, retry_after) | failed(reason)
//!     Wait(millis)  -> app waits (or stops; WorkManager runs a sync later)
//!     Done(report)  -> end
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use client_core::{Refusal, Session, Step, SyncOptions};
use client_sdk::{normalize_server_url, Tokens, TransportError};
use rand::Rng;
use serde_json::json;

use crate::error::GesyncError;
use crate::phone::{Inner, Phone};
use crate::types::{HttpAnswer, HttpRequest, SyncProgress, SyncStep};

type Result<T, E = GesyncError> = std::result::Result<T, E>;

/// One sync the app drives.
pub(crate) struct SyncRun {
    session: Session,
    started: Instant,
    in_flight: Option<InFlight>,
    /// Failed exchanges in a row.
    failures: u32,
    /// The wait to report at the next step, after a failure.
    wait: Option<(Duration, String, String)>,
    /// A refresh must go before the sync request.
    need_refresh: bool,
    /// The access token was refreshed for the request waiting in `resend`.
    refreshed: bool,
    /// A sync request refused for an expired token, to send again after the refresh.
    resend: Option<Vec<u8>>,
}

enum InFlight {
    Sync(Vec<u8>),
    Refresh,
}

impl SyncRun {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A failure that may pass: the next step is a wait, saying why as the error would
    /// (`unreachable`, `busy`, `throttled`, `server`).
    fn retry_later(&mut self, retry_after: Option<u64>, why: GesyncError) {
        self.failures += 1;
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        let wait = client_core::backoff(self.failures, retry_after, jitter);
        self.wait = Some((wait, why.code(), why.to_string()));
    }
}

/// The API's error answer as the SDK's transport reads it.
fn refusal_of(answer: &HttpAnswer) -> TransportError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&answer.body).ok();
    let field = |k: &str| parsed.as_ref().and_then(|v| v["error"][k].as_str()).map(str::to_string);
    TransportError::Status {
        status: answer.status,
        code: field("code").unwrap_or_default(),
        message: field("message").map(|m| m.replace(['\n', '\r'], " ")).unwrap_or_else(|| format!("HTTP {}", answer.status)),
        retry_after: answer.retry_after_seconds,
    }
}

fn tokens(answer: &HttpAnswer) -> Result<Tokens> {
    serde_json::from_slice(&answer.body).map_err(|e| GesyncError::Protocol { reason: format!("the server's tokens are not the expected JSON: {e}") })
}

fn post(url: String, headers: &[(&str, String)], body: Vec<u8>) -> HttpRequest {
    let headers: HashMap<String, String> = headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    HttpRequest { method: "POST".into(), url, headers, body }
}

fn json_post(url: String, body: serde_json::Value) -> HttpRequest {
    post(url, &[("content-type", "application/json".into())], body.to_string().into_bytes())
}

#[uniffi::export]
impl Phone {
    /// The login request for an app that makes its own HTTP calls: make it, then give the
    /// answer to [`Phone::login_answer`]. The request carries the password: log none of it.
    pub fn login_request(&self, server: String, username: String, password: String) -> Result<HttpRequest> {
        let server = normalize_server_url(&server)?;
        let body = serde_json::to_value(self.lock().client.login_request(&username, &password)).expect("a login request serialises");
        Ok(json_post(format!("{server}/api/v1/auth/login"), body))
    }

    /// Keeps what the login answer gave (the tokens), or throws why it was refused
    /// (`LoginRefused`, `Throttled`, or `DeviceRevoked` with the store wiped).
    pub fn login_answer(&self, server: String, username: String, answer: HttpAnswer) -> Result<()> {
        let mut inner = self.lock();
        let done = if answer.status == 200 {
            tokens(&answer).and_then(|t| Ok(inner.client.logged_in(&server, &username, None, t)?))
        } else {
            Err(inner.client.login_refused(refusal_of(&answer)).into())
        };
        inner.noted(done)
    }

    /// Starts a sync the app drives (a sync already begun is dropped: what it stored stays).
    pub fn begin_sync(&self) -> Result<()> {
        let mut inner = self.lock();
        inner.live()?;
        if inner.client.access_token().is_none() {
            return Err(match inner.client.store().server() {
                Some(_) => client_sdk::Error::SessionExpired.into(),
                None => client_sdk::Error::NotLoggedIn.into(),
            });
        }
        let session = Session::new(inner.client.store(), &SyncOptions::default(), 0.0)?;
        inner.run = Some(SyncRun {
            session,
            started: Instant::now(),
            in_flight: None,
            failures: 0,
            wait: None,
            need_refresh: false,
            refreshed: false,
            resend: None,
        });
        Ok(())
    }

    /// What to do next (see [`SyncStep`]).
    pub fn next_step(&self) -> Result<SyncStep> {
        let mut guard = self.lock();
        let Inner { client, run, .. } = &mut *guard;
        let r = run.as_mut().ok_or_else(|| GesyncError::usage("no sync begun: call begin_sync first"))?;
        if r.in_flight.is_some() {
            return Err(GesyncError::usage("a request is in flight: call answer or failed first"));
        }
        if let Some((wait, code, reason)) = r.wait.take() {
            return Ok(SyncStep::Wait { millis: wait.as_millis() as u64, failures: r.failures, code, reason });
        }
        let server = client.store().server().ok_or(client_sdk::Error::NotLoggedIn)?.to_string();
        if r.need_refresh {
            let refresh = client.refresh_token().ok_or(client_sdk::Error::SessionExpired)?;
            let request = json_post(format!("{server}/api/v1/auth/refresh"), json!({"refresh_token": refresh}));
            r.in_flight = Some(InFlight::Refresh);
            return Ok(SyncStep::Send { request });
        }
        let body = match r.resend.take() {
            Some(body) => body,
            None => match r.session.next(client.store(), r.now()) {
                Ok(Step::Send(body)) => {
                    r.refreshed = false;
                    body
                }
                Ok(Step::Done(report)) => {
                    *run = None;
                    return Ok(SyncStep::Done { report: report.into() });
                }
                Err(e) => {
                    *run = None;
                    return Err(e.into());
                }
            },
        };
        let access = client.access_token().ok_or(client_sdk::Error::SessionExpired)?;
        let request = post(
            format!("{server}/api/v1/sync"),
            &[("authorization", format!("Bearer {access}")), ("content-type", sync_protocol::wire::CONTENT_TYPE.into())],
            body.clone(),
        );
        r.in_flight = Some(InFlight::Sync(body));
        Ok(SyncStep::Send { request })
    }

    /// The answer to the request of the last [`SyncStep::Send`]: applied and stored (records,
    /// then the cursor) before this returns. Throws when the sync cannot go on: `DeviceRevoked`
    /// and `AccountDisabled` (the store is wiped), `SessionExpired` (log in again), a refusal.
    pub fn answer(&self, answer: HttpAnswer) -> Result<SyncProgress> {
        let mut guard = self.lock();
        let Inner { client, run, .. } = &mut *guard;
        let r = run.as_mut().ok_or_else(|| GesyncError::usage("no sync begun: call begin_sync first"))?;
        let in_flight = r.in_flight.take().ok_or_else(|| GesyncError::usage("no request in flight"))?;
        let outcome: Result<()> = match in_flight {
            InFlight::Sync(_) if answer.status == 200 => {
                match r.session.answered(client.store_mut(), &answer.body, r.now()) {
                    Ok(_) => {
                        r.failures = 0;
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            InFlight::Sync(body) => {
                let refused = refusal_of(&answer);
                let dictionary = match &refused {
                    TransportError::Status { status, code, .. } => r.session.unread_dictionary(*status, code),
                    _ => false,
                };
                if dictionary {
                    // An older replica could not read the records dictionary, or another
                    // replica does not hold the pushes' page context: the next step sends the
                    // request again at once without it.
                    return Ok(progress(client, r));
                }
                match refused.refusal() {
                    Some(Refusal::Refresh) if !r.refreshed => {
                        r.need_refresh = true;
                        r.resend = Some(body);
                        Ok(())
                    }
                    Some(Refusal::Refresh) => Err(client_sdk::Error::SessionExpired.into()),
                    Some(Refusal::RetryLater) => {
                        r.session.failed(r.now());
                        r.retry_later(answer.retry_after_seconds, client_sdk::Error::from(refused).into());
                        Ok(())
                    }
                    _ => Err(client.wipe_if_refused(&refused).unwrap_or_else(|| refused.into()).into()),
                }
            }
            InFlight::Refresh if answer.status == 200 => match tokens(&answer).and_then(|t| Ok(client.refreshed(t)?)) {
                Ok(_) => {
                    r.need_refresh = false;
                    r.refreshed = true;
                    r.failures = 0;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            InFlight::Refresh => {
                let refused = refusal_of(&answer);
                if refused.refusal() == Some(Refusal::RetryLater) {
                    r.retry_later(answer.retry_after_seconds, client_sdk::Error::from(refused).into());
                    Ok(())
                } else {
                    Err(client.refresh_refused(refused).into())
                }
            }
        };
        match outcome {
            Ok(()) => Ok(progress(client, r)),
            Err(e) => {
                *run = None;
                guard.noted(Err(e))
            }
        }
    }

    /// The request of the last [`SyncStep::Send`] got no answer (no network, a cut, a
    /// timeout): what it carried goes again, in a smaller page, after the wait the next step
    /// gives. `reason` is for the app's own log (no secrets in it).
    pub fn failed(&self, reason: String) -> Result<()> {
        let mut guard = self.lock();
        let r = guard.run.as_mut().ok_or_else(|| GesyncError::usage("no sync begun: call begin_sync first"))?;
        match r.in_flight.take() {
            Some(InFlight::Sync(_)) => r.session.failed(r.now()),
            Some(InFlight::Refresh) => {}
            None => return Err(GesyncError::usage("no request in flight")),
        }
        r.retry_later(None, GesyncError::Unreachable { reason });
        Ok(())
    }

    /// The progress of the sync the app drives, while one runs.
    pub fn progress(&self) -> Option<SyncProgress> {
        let guard = self.lock();
        let r = guard.run.as_ref()?;
        Some(progress(&guard.client, r))
    }
}

fn progress(client: &client_sdk::Client, r: &SyncRun) -> SyncProgress {
    (&r.session.progress(client.store(), None)).into()
}
