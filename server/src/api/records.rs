//! Reading records over the API: `GET /api/v1/records` (a unit's records, by kind and period)
//! and `GET /api/v1/records/{id}`, within the caller's record scope; every reader's reads but a
//! commune officer's are audited (`Principal::reads_are_audited`).

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::Value;
use sync_protocol::{RecordId, RecordKind};

use crate::error::{AppError, AppResult};

use super::{audit, blocking, parse_period, Authed, Q, Shared};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsQuery {
    org_unit: Option<String>,
    kind: Option<String>,
    period: Option<String>,
}

pub(super) async fn list_records(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<RecordsQuery>) -> AppResult<axum::Json<Value>> {
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
            for id in db.records().record_ids_of(&c)? {
                let Some(meta) = db.records().get_meta(&id)? else { continue };
                if kind.is_some_and(|k| k != meta.kind) {
                    continue;
                }
                if let Some(per) = period {
                    let inside = meta.date.as_deref().and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()).is_some_and(|d| per.contains(d));
                    if !inside {
                        continue;
                    }
                }
                if let Some(v) = db.records().record_view(&id)? {
                    out.push(v);
                }
            }
        }
        if let Some(ev) = ev {
            db.audit_log().audit(ev)?;
        }
        Ok(out)
    })
    .await?;
    Ok(axum::Json(Value::Array(out)))
}

pub(super) async fn get_record(State(state): State<Shared>, Authed(p): Authed, Path(id): Path<String>) -> AppResult<axum::Json<Value>> {
    let id: RecordId = id.parse().map_err(|e: sync_protocol::BadRecordId| AppError::bad_request(e.to_string()))?;
    let db = state.db.clone();
    let tree = db.tree();
    let view = blocking(move || {
        // Same answer for "absent" and "not yours": existence is not revealed outside scope.
        let meta = db.records().get_meta(&id)?.filter(|m| p.may_access_records_of(&tree, &m.commune)).ok_or_else(|| AppError::not_found("no such record in your scope"))?;
        if p.reads_are_audited() {
            db.audit_log().audit(audit(&p, "record_read", format!("{id} ({})", meta.commune)).expect("event"))?;
        }
        db.records().record_view(&id)?.ok_or_else(|| AppError::not_found("no such record in your scope"))
    })
    .await?;
    Ok(axum::Json(view))
}
