//! The org unit tree and its targets: `GET`/`POST /api/v1/org-units`, merges
//! (`POST /api/v1/org-units/{code}/merge`, [`merge_org_unit_checked`] shared with the web pages),
//! [`level_for`] (also used by the command line) and `PUT /api/v1/targets/{org_unit}/{indicator}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use indicators::{IndicatorId, Milestones};
use serde::Deserialize;
use serde_json::Value;
use sync_protocol::OrgUnitCode;

use crate::org_units::Merged;
use crate::error::{AppError, AppResult};
use crate::model::{OrgTree, OrgUnit, Principal};

use super::{audit, blocking, check_org_unit_change, require_admin, require_admin_of, Authed, JsonBody, Shared};

pub(super) async fn list_org_units(State(state): State<Shared>, Authed(_p): Authed) -> AppResult<axum::Json<Value>> {
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

pub(super) async fn add_org_unit(State(state): State<Shared>, Authed(p): Authed, JsonBody(b): JsonBody<NewOrgUnit>) -> AppResult<(StatusCode, axum::Json<Value>)> {
    require_admin(&p)?;
    let code: OrgUnitCode = b.code.parse().map_err(|e: sync_protocol::BadOrgUnitCode| AppError::bad_request(e.to_string()))?;
    let tree = state.db.tree();
    let level = level_for(&tree, code.as_str(), b.level.as_deref()).map_err(AppError::bad_request)?;
    let unit = OrgUnit::new(code.to_string(), b.name, b.parent, level);
    state.db.org_units().check_org_unit(&unit)?;
    check_org_unit_change(&p, &tree, &unit)?;
    let db = state.db.clone();
    let u2 = unit.clone();
    let ev = audit(&p, "org_unit_put", unit.code.clone());
    blocking(move || Ok(db.org_units().put_org_unit(u2, ev)?)).await?;
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
    blocking(move || Ok(db.org_units().merge_org_unit(&code, &into, effective, crate::model::today(), ev)?)).await
}

/// `POST /api/v1/org-units/{code}/merge`: an admin of both units merges one into the other.
pub(super) async fn merge_org_unit(State(state): State<Shared>, Authed(p): Authed, Path(code): Path<String>, JsonBody(b): JsonBody<OrgUnitMerge>) -> AppResult<axum::Json<Value>> {
    let merged = merge_org_unit_checked(&state, &p, code, b.into, &b.effective).await?;
    Ok(axum::Json(serde_json::to_value(merged).expect("merge serialises")))
}

pub(super) async fn set_target(
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
    blocking(move || Ok(db.figures().set_target(&org_unit, ind, &m, ev)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}
