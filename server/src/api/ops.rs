//! Operating the server: the admin's view of the hash-chained audit log (`GET /api/v1/audit`,
//! with the chain's verification) and `/metrics` (the counters of [`super::Metrics`] and the
//! latency histograms, for the monitoring token or an admin), and `/healthz`: "ok" while the
//! store answers, 503 with `store_unavailable` while it does not (a replica that lost its
//! database).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{AppError, AppResult};

use super::{blocking, principal_from_bearer, prometheus, require_admin, Authed, Q, Shared};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn audit_log(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<AuditQuery>) -> AppResult<axum::Json<Value>> {
    require_admin(&p)?;
    let db = state.db.clone();
    let witness = state.audit_witness.clone();
    let (entries, chain) = blocking(move || {
        // Scoped like the users: an entry made by an account shows to the admins of that
        // account's unit; one made by no account (the command line, a login of no account)
        // to every admin.
        let tree = db.tree();
        let units: std::collections::HashMap<String, String> = db.accounts().list_users()?.into_iter().map(|u| (u.username, u.org_unit)).collect();
        let limit = q.limit.unwrap_or(1000).min(10_000);
        let mut shown = Vec::new();
        let mut since = q.since.unwrap_or(0);
        // Read in batches until `limit` entries in scope were found or the log ends.
        loop {
            let batch = db.audit_log().audit_since(since, 1000)?;
            let Some(last) = batch.last().map(|e| e.seq) else { break };
            since = last;
            shown.extend(batch.into_iter().filter(|e| units.get(&e.user).is_none_or(|unit| p.may_administer(&tree, unit))));
            if shown.len() >= limit {
                shown.truncate(limit);
                break;
            }
        }
        Ok((shown, audit_chain(&db, witness.as_deref())?))
    })
    .await?;
    Ok(axum::Json(json!({"entries": entries, "chain": chain})))
}

/// The audit chain as an admin reads it (the API and the users page): whether it verifies, and
/// against what: its newest signed checkpoint, to be noted down outside the store, and the
/// witness file's last checkpoint when the server keeps one (`--audit-witness`).
pub(crate) fn audit_chain(db: &crate::db::Db, witness: Option<&std::path::Path>) -> Result<Value, crate::db::DbError> {
    let seen = witness.map(crate::db::AuditWitness::read).unwrap_or_default();
    let mut chain = match db.audit_log().verify_audit_chain_against(&seen)? {
        Ok(n) => json!({"valid": true, "entries": n}),
        Err(seq) => json!({"valid": false, "broken_at": seq}),
    };
    chain["checkpoint"] = match db.audit_log().latest_audit_checkpoint()? {
        Some(ck) => json!({"entries": ck.seq, "signature": ck.signature}),
        None => Value::Null,
    };
    chain["witness"] = match witness {
        None => Value::Null,
        Some(_) => json!({"entries": seen.iter().map(|w| w.seq).max().unwrap_or(0)}),
    };
    Ok(chain)
}

/// `/metrics` shows who uses the system how much: the monitoring token, or an admin.
async fn require_metrics_reader(state: &Shared, headers: &HeaderMap) -> AppResult<()> {
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
    require_admin(&principal_from_bearer(state, bearer).await?)
}

/// "ok" while the store answers; once the full check run after start has found damage, the
/// answer says so (still 200: the other records are served, and a load balancer that ejected
/// every replica of a damaged store would serve nothing).
pub(super) async fn healthz(State(state): State<Shared>) -> AppResult<String> {
    let db = state.db.clone();
    blocking(move || Ok(db.store_answers()?)).await?;
    let found = state.store_check.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(match found {
        Some(problems) => format!("ok; store check: {problems}"),
        None => "ok".into(),
    })
}

pub(super) async fn metrics(State(state): State<Shared>, headers: HeaderMap) -> AppResult<Response> {
    require_metrics_reader(&state, &headers).await?;
    // Store reads (and sled's file sizes): off the async workers.
    let db = state.db.clone();
    let (feed_seq, size_on_disk) = blocking(move || Ok((db.records().feed_seq()?, db.size_on_disk()))).await?;
    let m = &state.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let body = format!(
        "# TYPE gesync_sync_requests_total counter\ngesync_sync_requests_total {}\n\
         # TYPE gesync_sync_slow_link_requests_total counter\ngesync_sync_slow_link_requests_total {}\n\
         # TYPE gesync_sync_page_context_hits_total counter\ngesync_sync_page_context_hits_total {}\n\
         # TYPE gesync_sync_page_context_misses_total counter\ngesync_sync_page_context_misses_total {}\n\
         # TYPE gesync_sync_bytes_in_total counter\ngesync_sync_bytes_in_total {}\n\
         # TYPE gesync_sync_bytes_out_total counter\ngesync_sync_bytes_out_total {}\n\
         # TYPE gesync_records_accepted_total counter\ngesync_records_accepted_total {}\n\
         # TYPE gesync_records_rejected_total counter\ngesync_records_rejected_total {}\n\
         # TYPE gesync_logins_total counter\ngesync_logins_total {}\n\
         # TYPE gesync_login_failures_total counter\ngesync_login_failures_total {}\n\
         # TYPE gesync_logins_refused_total counter\ngesync_logins_refused_total {}\n\
         # TYPE gesync_password_checks_total counter\ngesync_password_checks_total {}\n\
         # TYPE gesync_refresh_failures_total counter\ngesync_refresh_failures_total {}\n\
         # TYPE gesync_feed_sequence gauge\ngesync_feed_sequence {}\n\
         # TYPE gesync_store_bytes gauge\ngesync_store_bytes {}\n\
         # TYPE gesync_sync_page_context_bytes gauge\ngesync_sync_page_context_bytes {}\n\
         # TYPE gesync_syncs_working gauge\ngesync_syncs_working {}\n\
         # TYPE gesync_syncs_working_peak gauge\ngesync_syncs_working_peak {}\n\
         # TYPE gesync_store_form_level gauge\ngesync_store_form_level {}\n",
        g(&m.sync_requests),
        g(&m.sync_slow_link_requests),
        g(&m.sync_page_context_hits),
        g(&m.sync_page_context_misses),
        g(&m.sync_bytes_in),
        g(&m.sync_bytes_out),
        g(&m.records_accepted),
        g(&m.records_rejected),
        g(&m.logins),
        g(&m.login_failures),
        g(&m.logins_refused),
        g(&m.password_checks),
        g(&m.refresh_failures),
        feed_seq,
        size_on_disk,
        state.page_contexts.held().0,
        g(&m.syncs_working),
        g(&m.syncs_working_peak),
        state.db.form_level(),
    ) + &prometheus().render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
