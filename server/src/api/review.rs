//! Review over the API, thin over `crate::review`: conflicts (`GET /api/v1/conflicts`, resolve),
//! possible duplicates (`GET /api/v1/duplicates`, not-duplicate, merge) and district approvals
//! (`GET`/`POST /api/v1/approvals`, each listed with its current figures beside the approved ones).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use sync_protocol::RecordId;

use crate::db::AuditEvent;
use crate::error::{AppError, AppResult};

use super::{blocking, check_figures_scope, parse_period, Authed, JsonBody, Q, Shared, UnitPeriodQuery};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnitQuery {
    org_unit: Option<String>,
}

pub(super) async fn list_conflicts(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<UnitQuery>) -> AppResult<axum::Json<Value>> {
    let unit = q.org_unit.unwrap_or_else(|| p.org_unit.clone());
    let db = state.db.clone();
    // Competing values of victims' records, with who and which device: audited, as the page is.
    let list = blocking(move || {
        let list = db.review().conflicts_under(&p, &unit)?;
        db.audit_log().audit(AuditEvent { user: p.username.clone(), device_id: Some(p.device_id.clone()), action: "conflicts_list", target: unit })?;
        Ok(list)
    })
    .await?;
    Ok(axum::Json(serde_json::to_value(list).expect("conflicts serialise")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResolveBody {
    value: Value,
}

pub(super) async fn resolve_conflict(State(state): State<Shared>, Authed(p): Authed, Path(id): Path<String>, JsonBody(b): JsonBody<ResolveBody>) -> AppResult<StatusCode> {
    let db = state.db.clone();
    blocking(move || Ok(db.review().resolve_conflict(&p, &id, &b.value)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn list_duplicates(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<UnitQuery>) -> AppResult<axum::Json<Value>> {
    let unit = q.org_unit.unwrap_or_else(|| p.org_unit.clone());
    let db = state.db.clone();
    let list = blocking(move || {
        let list = db.review().duplicates_under(&p, &unit)?;
        db.audit_log().audit(AuditEvent { user: p.username.clone(), device_id: Some(p.device_id.clone()), action: "duplicates_list", target: unit })?;
        Ok(list)
    })
    .await?;
    Ok(axum::Json(serde_json::to_value(list).expect("pairs serialise")))
}

pub(super) async fn dismiss_duplicate(State(state): State<Shared>, Authed(p): Authed, Path(id): Path<String>) -> AppResult<StatusCode> {
    let db = state.db.clone();
    blocking(move || Ok(db.review().mark_not_duplicate(&p, &id)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MergeBody {
    keep: String,
}

pub(super) async fn merge_duplicate(State(state): State<Shared>, Authed(p): Authed, Path(id): Path<String>, JsonBody(b): JsonBody<MergeBody>) -> AppResult<StatusCode> {
    let keep: RecordId = b.keep.parse().map_err(|e: sync_protocol::BadRecordId| AppError::bad_request(e.to_string()))?;
    let db = state.db.clone();
    blocking(move || Ok(db.review().merge_duplicates(&p, &id, keep)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Approvals under a unit, each with the figures approved and the current ones beside them.
pub(super) async fn list_approvals(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<UnitPeriodQuery>) -> AppResult<axum::Json<Value>> {
    let unit = q.org_unit.unwrap_or_else(|| p.org_unit.clone());
    check_figures_scope(&state, &p, &unit)?;
    let period = q.period.as_deref().map(parse_period).transpose()?;
    let db = state.db.clone();
    let out = blocking(move || {
        let mut out = Vec::new();
        let tree = db.tree();
        for a in db.review().approvals_under(&unit)? {
            if period.is_some_and(|per| per.to_string() != a.period) {
                continue;
            }
            let per = parse_period(&a.period)?;
            let mut v = serde_json::to_value(&a).expect("approval serialises");
            // An approval taken on the old map, of a unit merged since, stays readable as the
            // record of what was reported; today's figures are its successor's, not its own.
            match tree.get(&a.org_unit).filter(|u| !u.is_current()) {
                Some(_) => {
                    v["current_figures"] = Value::Null;
                    v["merged_into"] = tree.current(&a.org_unit).map(|u| Value::String(u.code.clone())).unwrap_or(Value::Null);
                }
                None => v["current_figures"] = serde_json::to_value(db.figures().indicators(&a.org_unit, per)?).expect("report serialises"),
            }
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
pub(super) struct ApproveBody {
    org_unit: String,
    period: String,
}

pub(super) async fn approve_period(State(state): State<Shared>, Authed(p): Authed, JsonBody(b): JsonBody<ApproveBody>) -> AppResult<(StatusCode, axum::Json<Value>)> {
    let period = parse_period(&b.period)?;
    let db = state.db.clone();
    let a = blocking(move || Ok(db.review().approve(&p, &b.org_unit, period)?)).await?;
    Ok((StatusCode::CREATED, axum::Json(serde_json::to_value(a).expect("approval serialises"))))
}
