//! Figures: `GET /api/v1/indicators`, the report as a file
//! (`GET /api/v1/reports/{org_unit}/{period}.csv` or `.xlsx`, rows from [`report_rows`], which
//! the web export and the workbook share) and the reporting calendar (`GET /api/v1/calendar`).

use axum::extract::{Path, State};
use axum::response::Response;
use indicators::Period;
use serde::Deserialize;
use serde_json::Value;

use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::report_file::ReportFormat;

use super::{audit, blocking, check_figures_scope, parse_period, Authed, Q, Shared, UnitPeriodQuery};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FiguresQuery {
    org_unit: Option<String>,
    period: String,
}

pub(super) async fn get_indicators(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<FiguresQuery>) -> AppResult<axum::Json<Value>> {
    let period = parse_period(&q.period)?;
    let unit = q.org_unit.unwrap_or_else(|| p.org_unit.clone());
    check_figures_scope(&state, &p, &unit)?;
    let db = state.db.clone();
    let report = blocking(move || Ok(db.figures().indicators(&unit, period)?)).await?;
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
        rows.push(indicators::CsvRow { code: u.code.clone(), name: u.name.clone(), level: u.level.clone(), report: db.figures().indicators(code, period)? });
    }
    Ok(rows)
}

/// `GET /api/v1/reports/{org_unit}/{period}.csv` or `.xlsx`: the report rows as a file.
pub(super) async fn report_file(State(state): State<Shared>, Authed(p): Authed, Path((unit, file)): Path<(String, String)>) -> AppResult<Response> {
    let (period, format) = ReportFormat::split(&file).ok_or_else(|| AppError::not_found(crate::report_file::FILE_NAMES))?;
    let period = parse_period(period)?;
    check_figures_scope(&state, &p, &unit)?;
    let db = state.db.clone();
    let ev = audit(&p, "report_export", format!("{unit}/{period}"));
    let u2 = unit.clone();
    let bytes = blocking(move || {
        let rows = report_rows(&db, &u2, period)?;
        db.audit_log().audit(ev.expect("event"))?;
        format.render(&rows)
    })
    .await?;
    format.response(&unit, period, bytes)
}

/// Which reports are due for an org unit, and which communes have sent nothing in the period.
pub(super) async fn calendar(State(state): State<Shared>, Authed(p): Authed, Q(q): Q<UnitPeriodQuery>) -> AppResult<axum::Json<Value>> {
    let unit = q.org_unit.unwrap_or_else(|| p.org_unit.clone());
    check_figures_scope(&state, &p, &unit)?;
    let today = chrono::Utc::now().date_naive();
    let period = match q.period {
        Some(s) => parse_period(&s)?,
        None => Period::whole_year(today.format("%Y").to_string().parse().unwrap_or(2025)).map_err(|e| AppError::bad_request(e.to_string()))?,
    };
    let db = state.db.clone();
    let out = blocking(move || Ok(db.records().calendar_status(&unit, period, today)?)).await?;
    Ok(axum::Json(out))
}
