//! The province view: the figures of each unit directly under the province (districts, and
//! communes that hang directly under it since the 2025 reform), and the province's own.
//! Figures only: province staff see no individual records.

use axum::extract::{Query, State};
use axum::response::Response;
use indicators::{IndicatorId, IndicatorReport};
use maud::html;

use super::district::{cell, figures_target, period_selector, FiguresQuery};
use super::fmt;
use super::page::{blocking, page, Lang, Section, Web, WebResult};
use crate::api::Shared;
use crate::model::OrgUnit;

/// `GET /province?unit=&period=`.
pub async fn view(State(state): State<Shared>, web: Web, Query(q): Query<FiguresQuery>) -> WebResult<Response> {
    let (unit, period) = figures_target(&web, &state.db, q.unit, q.period)?;
    let db = state.db.clone();
    let who = web.p().clone();
    let (total, rows, parent) = blocking(move || {
        let tree = db.tree();
        let total = db.figures().indicators(&unit.code, period)?;
        let mut rows: Vec<(OrgUnit, IndicatorReport)> = Vec::new();
        for c in tree.children(&unit.code) {
            let u = tree.get(c).cloned().expect("child from the tree");
            rows.push((u, db.figures().indicators(c, period)?));
        }
        let parent = unit.parent.as_deref().and_then(|p| tree.get(p)).cloned().filter(|p| who.may_read_figures_of(&tree, &p.code));
        let approvals = db.review().approvals_under(&unit.code)?;
        Ok((total, rows, (unit, parent, approvals)))
    })
    .await?;
    let (unit, parent, approvals) = parent;
    let lang = web.lang;
    let heading = fmt::overview(lang, &unit.level);
    let title = format!("{heading} · {}", unit.name);
    let body = html! {
        @if let Some(p) = &parent {
            p.muted { a href={ "/province?unit=" (p.code) "&period=" (period) } { "← " (p.name) } }
        }
        h1 { (heading) ": " (unit.name) }
        div.bar {
            (period_selector(&web, "/province", &unit.code, period))
            a href={ "/export/" (unit.code) "/" (period) ".csv" } { (web.t("Tải báo cáo (CSV)", "Download the report (CSV)")) }
            a href={ "/export/" (unit.code) "/" (period) ".xlsx" } { (web.t("Tải báo cáo (Excel)", "Download the report (Excel)")) }
            a href={ "/report/" (unit.code) "/" (period) } { (web.t("Bản in báo cáo", "Printable report")) }
        }
        p.muted { (web.t(
            "Số liệu tổng hợp theo đơn vị trực thuộc; trang này không hiển thị hồ sơ cá nhân.",
            "Aggregate figures per unit below; this page shows no individual records.")) }
        h2 { (fmt::period(lang, period)) }
        table id="units" {
            thead {
                tr {
                    th { (web.t("Đơn vị", "Unit")) }
                    @for id in IndicatorId::ALL { th.num { (fmt::indicator_short(lang, id)) } }
                    th { (web.t("Phê duyệt", "Approval")) }
                }
            }
            tbody {
                @for (u, r) in &rows {
                    tr data-unit=(u.code) {
                        td {
                            @if u.level == crate::model::COMMUNE_LEVEL {
                                (u.name)
                            } @else if u.level == "district" {
                                a href={ "/district?unit=" (u.code) "&period=" (period) } { (u.name) }
                            } @else {
                                a href={ "/province?unit=" (u.code) "&period=" (period) } { (u.name) }
                            }
                            " " span.muted { "(" (fmt::level(lang, &u.level)) ", " (u.code) ")" }
                        }
                        @for id in IndicatorId::ALL { (cell(lang, r, id)) }
                        td.approval { (fmt::approval_badge(lang, crate::review::Approval::find(&approvals, &u.code, period))) }
                    }
                }
                tr.total data-unit=(unit.code) {
                    td {
                        @match lang {
                            Lang::Vi => { "Toàn " (indicators::level_name_vi(&unit.level).to_lowercase()) ": " }
                            Lang::En => { "Whole " (fmt::level(lang, &unit.level).to_lowercase()) ": " }
                        }
                        (unit.name)
                    }
                    @for id in IndicatorId::ALL { (cell(lang, &total, id)) }
                    td {}
                }
            }
        }
        h2 { (web.t("Chỉ tiêu", "Targets")) }
        ul {
            @for v in &total.indicators {
                li { (fmt::indicator(lang, v.id)) " (" (fmt::indicator_code(v.id)) "): " strong { (fmt::target(lang, v)) } }
            }
        }
    };
    Ok(page(&web, &title, Section::Province, body))
}
