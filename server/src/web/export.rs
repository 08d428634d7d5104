//! A unit's report (a district's, or a province's): the files of the API
//! (`/api/v1/reports/{unit}/{period}.csv` and `.xlsx`) for a browser session, and the same rows
//! as a printable page. All are audited as exports.

use axum::extract::{Path, State};
use indicators::{CsvRow, IndicatorId};
use maud::html;

use super::district::figures_target;
use super::fmt;
use super::page::{blocking, page, Section, Web, WebError, WebResult};
use crate::api::{report_rows, Shared};
use crate::db::AuditEvent;
use crate::model::Principal;
use crate::report_file::ReportFormat;

fn export_event(p: &Principal, action: &'static str, target: String) -> AuditEvent {
    AuditEvent { user: p.username.clone(), device_id: Some(p.device_id.clone()), action, target }
}

/// `GET /export/{unit}/{period}.csv` or `.xlsx`: the same file as the API's, audited the same
/// way.
pub async fn download(State(state): State<Shared>, web: Web, Path((unit, file)): Path<(String, String)>) -> WebResult {
    let (period, format) = ReportFormat::split(&file).ok_or_else(WebError::not_found)?;
    let (unit, period) = figures_target(&web, &state.db, Some(unit), Some(period.to_string()))?;
    let db = state.db.clone();
    let ev = export_event(web.p(), "report_export", format!("{}/{period}", unit.code));
    let code = unit.code.clone();
    let bytes = blocking(move || {
        let rows = report_rows(&db, &code, period)?;
        db.audit_log().audit(ev)?;
        Ok(format.render(&rows)?)
    })
    .await?;
    Ok(format.response(&unit.code, period, bytes)?)
}

/// `GET /report/{unit}/{period}`: the report's rows as a page that prints on A4 landscape.
pub async fn printable(State(state): State<Shared>, web: Web, Path((unit, period)): Path<(String, String)>) -> WebResult {
    let (unit, period) = figures_target(&web, &state.db, Some(unit), Some(period))?;
    let db = state.db.clone();
    let ev = export_event(web.p(), "report_view", format!("{}/{period}", unit.code));
    let code = unit.code.clone();
    let rows: Vec<CsvRow> = blocking(move || {
        let rows = report_rows(&db, &code, period)?;
        db.audit_log().audit(ev)?;
        Ok(rows)
    })
    .await?;
    let lang = web.lang;
    let title = format!("{} · {} · {}", web.t("Báo cáo", "Report"), unit.name, fmt::period(lang, period));
    let body = html! {
        h1 { (web.t("Báo cáo kết quả thực hiện chỉ tiêu bình đẳng giới", "Report on the gender-equality indicators")) }
        p {
            strong { (unit.name) } " (" (unit.code) ") · " (fmt::period(lang, period)) " · "
            (web.t("Lập ngày ", "Made on ")) (fmt::date(lang, fmt::today()))
        }
        div.bar {
            a href={ "/export/" (unit.code) "/" (period) ".csv" } { (web.t("Tải bảng tính (CSV)", "Download as a spreadsheet (CSV)")) }
            a href={ "/export/" (unit.code) "/" (period) ".xlsx" } { (web.t("Tải bảng tính (Excel)", "Download as a spreadsheet (Excel)")) }
            span.muted { (web.t("Dùng lệnh In của trình duyệt (Ctrl+P) để in hoặc lưu PDF.", "Use the browser's Print command (Ctrl+P) to print or save as PDF.")) }
        }
        @for id in IndicatorId::ALL {
            h2 { (fmt::indicator_code(id)) ". " (fmt::indicator(lang, id)) }
            table.report data-indicator=(id.as_str()) {
                thead {
                    tr {
                        th { (web.t("Đơn vị", "Unit")) }
                        th { (web.t("Cấp", "Level")) }
                        th.num { (web.t("Tử số", "Numerator")) }
                        th.num { (web.t("Mẫu số", "Denominator")) }
                        th.num { (web.t("Tỷ lệ", "Rate")) }
                        th.num { (web.t("Chỉ tiêu", "Target")) }
                        th { (web.t("Đánh giá", "Verdict")) }
                    }
                }
                tbody {
                    @for row in &rows {
                        @if let Some(v) = row.report.indicator(id) {
                            tr.total[row.code == unit.code] data-unit=(row.code) {
                                td { (row.name) " (" (row.code) ")" }
                                td { (fmt::level(lang, &row.level)) }
                                td.num { (v.numerator) }
                                td.num { (v.denominator) }
                                td.num { (v.value.map(|x| fmt::pct(lang, x)).unwrap_or_else(|| "–".into())) }
                                td.num { (fmt::target(lang, v)) }
                                td { (fmt::verdict(lang, v)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&web, &title, Section::Report, body))
}
