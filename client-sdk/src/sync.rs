//! The sync loop: a thin driver of `client-core`'s [`Session`] over tokio, the [`Transport`] and
//! the file [`Store`](crate::Store). The session decides every request and applies every answer
//! (paging, slices, a new store epoch, the cursor after the durability barrier); this file owns
//! the clock, the network calls, the session's refresh, and the waits between retries.
//!
//! On a poor link ([`SyncOptions::retry_for`]) a failed exchange (the link dropped, stalled, or
//! the server is busy) is retried with backoff and a smaller page.

use std::time::Duration;

use client_core::{Refusal, Session, Step};
use rand::Rng;
use tokio::time::Instant;

pub use client_core::{SyncOptions, SyncProgress, SyncReport, MAX_ROUNDS, PUSH_BUDGET};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::transport::{Transport, TransportError};

/// The wait before try `failures + 1`: exponential from half a second, with jitter so that a
/// whole commune's phones do not come back at the same instant; the server's `Retry-After`
/// wins when it says more.
pub fn backoff(failures: u32, error: &Error) -> Duration {
    let retry_after = match error {
        Error::Throttled { retry_after } | Error::Busy { retry_after } => *retry_after,
        _ => None,
    };
    client_core::backoff(failures, retry_after, rand::thread_rng().gen_range(0.8..1.2))
}

impl Client {
    /// Pushes pending records and pulls what changed on the server, until both sides are level,
    /// failing at the first error. `progress` is called after every exchange.
    pub async fn sync(&mut self, progress: impl FnMut(&SyncProgress)) -> Result<SyncReport> {
        self.sync_with(&SyncOptions::default(), progress).await
    }

    /// [`Client::sync`] with options: on a poor link, retries failed exchanges for
    /// `options.retry_for` with backoff. Stopping it at any moment (dropping the future, killing
    /// the process) loses nothing: every exchange's result is on disk before the next begins.
    pub async fn sync_with(&mut self, options: &SyncOptions, mut progress: impl FnMut(&SyncProgress)) -> Result<SyncReport> {
        if self.store.state().access_token.is_none() {
            return Err(match self.store.state().server {
                Some(_) => Error::SessionExpired,
                None => Error::NotLoggedIn,
            });
        }
        let transport = self.transport()?;
        let start = Instant::now();
        let now = || start.elapsed().as_secs_f64();
        let deadline = start + options.retry_for;
        let mut session = Session::new(&self.store, options, now())?;
        let mut failures = 0u32;
        loop {
            let body = match session.next(&self.store, now())? {
                Step::Done(report) => return Ok(report),
                Step::Send(body) => body,
            };
            match self.call_sync(&*transport, &mut session, body).await {
                // An older replica could not read the records dictionary, or another replica
                // does not hold the pushes' page context: again at once without it
                // (`Session::unread_dictionary`).
                Ok(None) => {}
                Ok(Some(answer)) => {
                    failures = 0;
                    let p = session.answered(&mut self.store, &answer, now())?;
                    progress(&p);
                }
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    failures += 1;
                    session.failed(now());
                    let wait = backoff(failures, &e).min(deadline - Instant::now());
                    progress(&session.progress(&self.store, Some((e.to_string(), wait))));
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One sync exchange, refreshing the session once if the access token has expired. Returns
    /// the answer's body (the session reads it), or `None` when the request goes again at once
    /// without the records dictionary, which the server could not read.
    async fn call_sync(&mut self, transport: &dyn Transport, session: &mut Session, body: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let mut access = self.store.state().access_token.clone().ok_or(Error::NotLoggedIn)?;
        let mut refreshed = false;
        loop {
            match transport.sync(&access, body.clone()).await {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(TransportError::Status { status, ref code, .. }) if session.unread_dictionary(status, code) => return Ok(None),
                // What a refusal means is decided by the core (the same rule as the app's).
                Err(e) => match e.refusal() {
                    Some(Refusal::WipeDeviceRevoked | Refusal::WipeAccountDisabled) => {
                        return Err(self.wipe_if_refused(&e).expect("a wipe refusal wipes"))
                    }
                    Some(Refusal::Refresh) if !refreshed => {
                        access = self.refresh(transport).await?;
                        refreshed = true;
                    }
                    Some(Refusal::Refresh) => return Err(Error::SessionExpired),
                    _ => return Err(e.into()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_honours_retry_after_and_transient_errors_are_told_apart() {
        let cut = Error::Unreachable { url: "u".into(), reason: "r".into() };
        let first = backoff(1, &cut);
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600), "{first:?}");
        let busy = Error::Throttled { retry_after: Some(45) };
        assert_eq!(backoff(1, &busy), Duration::from_secs(45));
        assert!(cut.is_transient() && busy.is_transient());
        assert!(!Error::SessionExpired.is_transient());
        assert!(!Error::Server { status: 400, message: String::new() }.is_transient());
        assert_eq!((Error::DeviceRevoked.code(), cut.code(), busy.code()), ("device_revoked", "unreachable", "throttled"));
    }
}
