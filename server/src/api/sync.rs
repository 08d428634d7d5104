//! `POST /api/v1/sync`: one page of the sync exchange (`crate::records` does the work). Each
//! account holds at most [`SYNCS_PER_USER`] requests in flight ([`SyncSlot`]); the work stops
//! between records when the client goes away; the answer goes in the phone's protocol version.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sync_protocol::wire::{Framing, SyncRequest, WireError, CONTENT_TYPE, MAX_MESSAGE_BYTES};
use sync_protocol::ErrorCode;

use crate::error::{AppError, AppResult};
use crate::model::Principal;

use super::{blocking, cores, scopeguard_histogram, Authed, Shared, SYNCS_PER_USER};

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

pub(super) async fn sync(
    State(state): State<Shared>,
    slot: SyncSlot,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> AppResult<Response> {
    let p = slot.p.clone();
    let _record = scopeguard_histogram("gesync_sync_seconds", std::time::Instant::now());
    let body = body?;
    // The phone's link is measured without the server's own time (`FLAG_SERVER_TIME`): from
    // here, the body read, to the answer's framing.
    let started = std::time::Instant::now();
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct != CONTENT_TYPE {
        return Err(AppError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::BadContentType, format!("sync bodies must be sent as {CONTENT_TYPE}")));
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(AppError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, format!("sync bodies are at most {MAX_MESSAGE_BYTES} bytes")));
    }
    // A request made against a page context is read with this device's, if this process
    // holds it.
    let held = |id| state.page_contexts.get(id, &p);
    let (mut req, framing, tail) = SyncRequest::decode_paged(&body, &held).map_err(|e| match e {
        WireError::UnknownContext => {
            state.metrics.sync_page_context_misses.fetch_add(1, Ordering::Relaxed);
            AppError::new(StatusCode::BAD_REQUEST, ErrorCode::UnknownPageContext, e.to_string())
        }
        e => AppError::new(StatusCode::BAD_REQUEST, ErrorCode::BadSyncMessage, e.to_string()),
    })?;
    if framing.push_context.is_some() {
        state.metrics.sync_page_context_hits.fetch_add(1, Ordering::Relaxed);
    }
    crate::records::check_request(&req).map_err(|e| AppError::new(StatusCode::BAD_REQUEST, ErrorCode::BadSyncMessage, e))?;
    // The answer goes in the phone's own protocol version, compressed if it reads zstd.
    let answer = framing.answer(&req);
    let m = &state.metrics;
    m.sync_requests.fetch_add(1, Ordering::Relaxed);
    if req.accept & sync_protocol::wire::FLAG_SLOW_LINK != 0 {
        m.sync_slow_link_requests.fetch_add(1, Ordering::Relaxed);
    }
    m.sync_bytes_in.fetch_add(body.len() as u64, Ordering::Relaxed);
    let db = state.db.clone();
    let shared = state.clone();
    // Work a client no longer waits for stops between records (the slot is freed with it).
    let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _abandon_on_drop = SetOnDrop(abandoned.clone());
    // Held by the work itself: a sync whose client went away keeps its permit until its work
    // stops.
    let permit = state.sync_work.clone().acquire_owned().await.map_err(|_| AppError::internal())?; // never closed
    let (resp, bytes) = blocking(move || {
        let _permit = permit;
        let working = Working::begin(&shared.metrics);
        // A slow link's answer costs more CPU per byte saved: honoured only while a core is free.
        if working.others() >= cores() {
            req.accept &= !sync_protocol::wire::FLAG_SLOW_LINK;
        }
        let resp = db.records().sync_unless(&p, &req, &abandoned)?;
        // Staff above a commune reading records through sync is audited, as the core decides.
        if let Some(event) = sync_core::exchange::read_audit(&p, &resp) {
            db.audit_log().audit(event)?;
        }
        // Compressing is CPU work: off the async threads too. Harder for a phone on a slow link,
        // unless every core already has a sync to answer: then the CPU, not the link, is short.
        let answer = answer.timed(&req, started.elapsed().as_secs_f64());
        let bytes = if answer.pages_in_context(&req) {
            // Against the page before, when this process kept it; kept for the next page.
            let contexts = &shared.page_contexts;
            let against = framing.context.and_then(|id| contexts.get(id, &p));
            if framing.context.is_some() {
                let counter = if against.is_some() { &shared.metrics.sync_page_context_hits } else { &shared.metrics.sync_page_context_misses };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            // The request's pushes, kept for its next page of pushes.
            let pushed = (!req.push.is_empty() || req.push_part.is_some()) && tail.is_some();
            let answer = Framing { kept: resp.more.then(|| contexts.new_id()), push_context: pushed.then(|| contexts.new_id()), ..answer };
            let (bytes, kept) = resp.encode_paged(answer, req.accept, against.as_deref());
            for kept in kept.into_iter().chain(answer.push_context.and_then(|id| Some(tail?.kept_as(id)))) {
                contexts.keep(&p, kept);
            }
            bytes
        } else {
            resp.encode_for(answer, req.accept)
        };
        drop(working);
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

/// One sync's work on a blocking thread (merged, read, encoded), counted in the server's
/// `gesync_syncs_working` (and its peak) while it lasts.
struct Working<'m>(&'m super::Metrics);

impl<'m> Working<'m> {
    fn begin(m: &'m super::Metrics) -> Working<'m> {
        let now = m.syncs_working.fetch_add(1, Ordering::Relaxed) + 1;
        m.syncs_working_peak.fetch_max(now, Ordering::Relaxed);
        Working(m)
    }

    /// The other syncs being worked on now.
    fn others(&self) -> usize {
        (self.0.syncs_working.load(Ordering::Relaxed) as usize).saturating_sub(1)
    }
}

impl Drop for Working<'_> {
    fn drop(&mut self) {
        self.0.syncs_working.fetch_sub(1, Ordering::Relaxed);
    }
}
