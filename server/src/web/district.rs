//! The reviewer's overview of a unit (a district, or a province whose communes hang directly
//! under it since 2025; titled by the unit's level): each indicator against its target, per
//! commune of the current map and for the unit, with a small quarterly chart; the commune ×
//! quarter grid of news items; reports due and communes that sent nothing. Figures only: no
//! individual record is shown here.

use axum::extract::{Query, State};
use axum::response::Response;
use indicators::{IndicatorId, IndicatorReport, Period, Quarter, MIN_NEWS_PER_QUARTER};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::fmt;
use super::page::{blocking, page, Lang, Section, Web, WebError, WebResult};
use crate::api::Shared;
use crate::db::Db;
use crate::model::OrgUnit;

#[derive(Deserialize)]
pub struct FiguresQuery {
    pub unit: Option<String>,
    pub period: Option<String>,
}

/// The org unit and period a figures page is about, checked against the caller's scope.
pub fn figures_target(web: &Web, db: &Db, unit: Option<String>, period: Option<String>) -> WebResult<(OrgUnit, Period)> {
    web.require_staff()?;
    let period = match period.filter(|s| !s.is_empty()) {
        Some(s) => s.parse::<Period>().map_err(|e| WebError::bad_input(e.to_string()))?,
        None => Period::whole_year(fmt::this_year()).map_err(|e| WebError::bad_input(e.to_string()))?,
    };
    let tree = db.tree();
    let code = unit.filter(|s| !s.is_empty()).unwrap_or_else(|| web.p().org_unit.clone());
    let unit = tree.get(&code).cloned().ok_or_else(WebError::not_found)?;
    if !web.p().may_read_figures_of(&tree, &unit.code) {
        return Err(WebError::forbidden());
    }
    Ok((unit, period))
}

/// Everything the overview shows, read in one go on the blocking pool.
struct Overview {
    unit: OrgUnit,
    parent: Option<OrgUnit>,
    period: Period,
    total: IndicatorReport,
    communes: Vec<(OrgUnit, IndicatorReport, Vec<u32>)>,
    /// The unit's report for each quarter of the period's year (the charts).
    by_quarter: Vec<(Quarter, IndicatorReport)>,
    calendar: Value,
    approval: Option<crate::review::Approval>,
    open_conflicts: usize,
    /// Whether the unit's province still has districts (the words for its communes).
    has_districts: bool,
}

fn read(db: &Db, unit: OrgUnit, period: Period) -> WebResult<Overview> {
    let tree = db.tree();
    let total = db.figures().indicators(&unit.code, period)?;
    let mut communes = Vec::new();
    for c in tree.communes_under(&unit.code) {
        let u = tree.get(&c).cloned().expect("commune from the tree");
        let news = period.quarters().into_iter().map(|q| Ok(u32::try_from(db.figures().counters(&c, q)?.news_items().max(0)).unwrap_or(u32::MAX))).collect::<WebResult<Vec<u32>>>()?;
        communes.push((u, db.figures().indicators(&c, period)?, news));
    }
    let year = Period::whole_year(period.year()).map_err(|e| WebError::bad_input(e.to_string()))?;
    let mut by_quarter = Vec::new();
    for q in year.quarters() {
        by_quarter.push((q, db.figures().indicators(&unit.code, Period::quarter(q))?));
    }
    let calendar = db.records().calendar_status(&unit.code, period, fmt::today())?;
    let parent = unit.parent.as_deref().and_then(|p| tree.get(p)).cloned();
    let approvals = db.review().approvals_under(&unit.code)?;
    let approval = crate::review::Approval::find(&approvals, &unit.code, period).cloned();
    let open_conflicts = db.review().open_conflicts(&unit.code)?;
    let has_districts = tree.has_districts(&unit.code);
    Ok(Overview { unit, parent, period, total, communes, by_quarter, calendar, approval, open_conflicts, has_districts })
}

/// `GET /district?unit=&period=`.
pub async fn overview(State(state): State<Shared>, web: Web, Query(q): Query<FiguresQuery>) -> WebResult<Response> {
    let (unit, period) = figures_target(&web, &state.db, q.unit, q.period)?;
    let db = state.db.clone();
    let o = blocking(move || read(&db, unit, period)).await?;
    let lang = web.lang;
    let heading = fmt::overview(lang, &o.unit.level);
    let title = format!("{heading} · {}", o.unit.name);
    let body = html! {
        @if !web.p().is_reviewer() {
            @if let Some(parent) = &o.parent {
                p.muted.noprint { a href={ "/province?unit=" (parent.code) "&period=" (o.period) } { "← " (parent.name) } }
            }
        }
        h1 { (heading) ": " (o.unit.name) }
        div.bar {
            (period_selector(&web, "/district", &o.unit.code, o.period))
            a href={ "/export/" (o.unit.code) "/" (o.period) ".csv" } { (web.t("Tải báo cáo (CSV)", "Download the report (CSV)")) }
            a href={ "/export/" (o.unit.code) "/" (o.period) ".xlsx" } { (web.t("Tải báo cáo (Excel)", "Download the report (Excel)")) }
            a href={ "/report/" (o.unit.code) "/" (o.period) } { (web.t("Bản in báo cáo", "Printable report")) }
        }
        p.status-line {
            strong { (web.t("Phê duyệt: ", "Approval: ")) } (fmt::approval_badge(lang, o.approval.as_ref()))
            @if web.p().is_reviewer() {
                " " a href={ "/review/approval?unit=" (o.unit.code) "&period=" (o.period) } { (web.t("Phê duyệt số liệu", "Approve the figures")) }
                " · "
                @if o.open_conflicts > 0 {
                    a href="/review/conflicts" { (web.t("Hồ sơ có xung đột dữ liệu: ", "Records with conflicts: ")) strong { (o.open_conflicts) } }
                } @else {
                    (web.t("Không có xung đột dữ liệu", "No data conflicts"))
                }
            }
        }
        h2 { (web.t("Chỉ tiêu", "Indicators")) " · " (fmt::period(lang, o.period)) }
        div.cards {
            @for v in &o.total.indicators {
                div.card data-indicator=(v.id.as_str()) {
                    h3 { (fmt::indicator_code(v.id)) ". " (fmt::indicator_short(lang, v.id)) }
                    p.muted.full-name { (fmt::indicator(lang, v.id)) }
                    p {
                        span.value { (v.value.map(|x| fmt::pct(lang, x)).unwrap_or_else(|| "–".into())) }
                        (fmt::verdict(lang, v))
                    }
                    p.counts {
                        span.ratio { (v.numerator) "/" (v.denominator) }
                        " · " (web.t("Chỉ tiêu", "Target")) ": " (fmt::target(lang, v))
                    }
                    (chart(lang, v.id, &o.by_quarter, v.target))
                }
            }
        }
        h2 { (web.t("Theo xã", "By commune")) }
        (commune_table(lang, &o))
        h2 { (web.t("Tin, bài về bình đẳng giới theo quý", "Gender-equality news items per quarter")) }
        p.muted { (web.t("Ô tô đỏ: xã có dưới 4 tin, bài trong quý (chưa đạt chỉ tiêu 6.3).", "Red cells: fewer than 4 news items in the quarter (indicator 6.3 not met)." )) }
        (news_grid(lang, &o))
        div.two {
            div {
                h2 { (web.t("Báo cáo đến hạn", "Reports due")) }
                (due_list(lang, &o.calendar))
            }
            div {
                h2 { (web.t("Xã chưa gửi số liệu trong kỳ", "Communes that sent nothing in the period")) }
                @let silent = o.calendar["communes_without_records"].as_array().cloned().unwrap_or_default();
                @if silent.is_empty() {
                    p { (web.t("Tất cả các xã đã có số liệu trong kỳ.", "Every commune has sent data for the period.")) }
                } @else {
                    ul id="silent-communes" {
                        @for c in &silent {
                            li { (c["name"].as_str().unwrap_or_default()) " (" (c["code"].as_str().unwrap_or_default()) ")" }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&web, &title, Section::District, body))
}

/// The period selector: a plain GET form, no script.
pub fn period_selector(web: &Web, action: &str, unit: &str, current: Period) -> Markup {
    let mut choices = fmt::period_choices();
    if !choices.contains(&current) {
        choices.insert(0, current);
    }
    html! {
        form method="get" action=(action) {
            input type="hidden" name="unit" value=(unit);
            div {
                label for="period" { (web.t("Kỳ báo cáo", "Period")) }
                select #period name="period" {
                    @for p in &choices {
                        option value=(p) selected[*p == current] { (fmt::period(web.lang, *p)) " (" (p) ")" }
                    }
                }
            }
            button.secondary type="submit" { (web.t("Xem", "Show")) }
        }
    }
}

/// One indicator's value in a table cell: value, counts, verdict.
pub fn cell(lang: Lang, r: &IndicatorReport, id: IndicatorId) -> Markup {
    html! {
        @if let Some(v) = r.indicator(id) {
            td.num data-indicator=(id.as_str()) {
                (fmt::value_with_counts(lang, v)) " "
                (fmt::verdict(lang, v))
            }
        } @else {
            td { "–" }
        }
    }
}

fn commune_table(lang: Lang, o: &Overview) -> Markup {
    html! {
        table id="communes" {
            thead {
                tr {
                    th { (fmt::communes_heading(lang, o.has_districts)) }
                    @for id in IndicatorId::ALL { th.num { (fmt::indicator_short(lang, id)) } }
                }
            }
            tbody {
                @for (u, r, _) in &o.communes {
                    tr data-unit=(u.code) {
                        td { (u.name) " " span.muted { "(" (u.code) ")" } }
                        @for id in IndicatorId::ALL { (cell(lang, r, id)) }
                    }
                }
                tr.total data-unit=(o.unit.code) {
                    td { (lang.t("Toàn đơn vị: ", "Whole unit: ")) (o.unit.name) }
                    @for id in IndicatorId::ALL { (cell(lang, &o.total, id)) }
                }
            }
        }
        p.muted { (lang.t("Mỗi ô: tỷ lệ (tử số/mẫu số) và đánh giá so với chỉ tiêu. “–”: chưa có trường hợp nào để tính.", "Each cell: rate (numerator/denominator) and the verdict against the target. “–”: nothing to measure yet.")) }
    }
}

fn news_grid(lang: Lang, o: &Overview) -> Markup {
    let quarters = o.period.quarters();
    html! {
        table id="news" {
            thead {
                tr {
                    th { (fmt::communes_heading(lang, o.has_districts)) }
                    @for q in &quarters { th.num { (lang.t("Quý ", "Q")) (q.q()) "/" (q.year()) } }
                }
            }
            tbody {
                @for (u, _, news) in &o.communes {
                    tr data-unit=(u.code) {
                        td { (u.name) }
                        @for n in news {
                            @if *n < MIN_NEWS_PER_QUARTER {
                                td.num.low { (n) span.flag { (lang.t("dưới 4", "under 4")) } }
                            } @else {
                                td.num { (n) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn due_list(lang: Lang, calendar: &Value) -> Markup {
    let due = calendar["due"].as_array().cloned().unwrap_or_default();
    html! {
        @if due.is_empty() {
            p { (lang.t("Không có báo cáo nào đến hạn.", "No report is due.")) }
        } @else {
            ul id="due" {
                @for d in &due {
                    @let kind = match d["kind"].as_str() { Some("six_month") => lang.t("Báo cáo 6 tháng", "Six-month report"), _ => lang.t("Báo cáo năm", "Annual report") };
                    @let period = d["period"].as_str().and_then(|p| p.parse::<Period>().ok());
                    @let deadline = d["deadline"].as_str().and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok());
                    @let days = d["days_left"].as_i64().unwrap_or(0);
                    li {
                        strong { (kind) }
                        @if let Some(p) = period { " · " (fmt::period(lang, p)) }
                        @if let Some(dl) = deadline { " · " (lang.t("hạn ", "due ")) (fmt::date(lang, dl)) }
                        " ("
                        @match (lang, days) {
                            (_, 0) => (lang.t("hôm nay", "today")),
                            (Lang::Vi, n) => { "còn " (n) " ngày" }
                            (Lang::En, n) => { (n) " days left" }
                        }
                        ")"
                    }
                }
            }
        }
    }
}

/// Quarterly values of the year as bars against the target line, drawn here as inline SVG
/// (no script, a few hundred bytes).
fn chart(lang: Lang, id: IndicatorId, by_quarter: &[(Quarter, IndicatorReport)], target: Option<f64>) -> Markup {
    const LEFT: f64 = 34.0;
    const TOP: f64 = 8.0;
    const HEIGHT: f64 = 84.0;
    const SLOT: f64 = 54.0;
    let y = |v: f64| TOP + HEIGHT * (1.0 - v.clamp(0.0, 1.0));
    let year = by_quarter.first().map(|(q, _)| q.year()).unwrap_or_default();
    let label = match (lang, target) {
        (Lang::Vi, Some(t)) => format!("Giá trị theo quý năm {year} so với chỉ tiêu {}", fmt::pct(lang, t)),
        (Lang::En, Some(t)) => format!("Quarterly values in {year} against the {} target", fmt::pct(lang, t)),
        (Lang::Vi, None) => format!("Giá trị theo quý năm {year}"),
        (Lang::En, None) => format!("Quarterly values in {year}"),
    };
    html! {
        svg.chart viewBox="0 0 260 118" role="img" aria-label=(label) {
            title { (label) }
            @for tick in [0.0, 0.5, 1.0] {
                line x1=(LEFT) x2="252" y1=(y(tick)) y2=(y(tick)) stroke="#d5dbe1" stroke-width="1" {}
                text x=(LEFT - 4.0) y=(y(tick) + 4.0) font-size="10" text-anchor="end" fill="#5b6570" { (format!("{:.0}%", tick * 100.0)) }
            }
            @for (i, (q, r)) in by_quarter.iter().enumerate() {
                @let cx = LEFT + SLOT * i as f64 + SLOT / 2.0;
                @let v = r.indicator(id);
                @match v.and_then(|v| v.value) {
                    Some(value) => {
                        @let met = v.and_then(|v| v.met) != Some(false);
                        rect x=(cx - 14.0) y=(y(value)) width="28" height=(TOP + HEIGHT - y(value)) fill=(if met { "#2e8540" } else { "#c0392b" }) {}
                        text x=(cx) y=((y(value) - 3.0).max(9.0)) font-size="10" text-anchor="middle" fill="#1b1f23" { (format!("{:.0}%", value * 100.0)) }
                    }
                    None => {
                        text x=(cx) y=(TOP + HEIGHT - 4.0) font-size="11" text-anchor="middle" fill="#8a96a3" { "–" }
                    }
                }
                text x=(cx) y="110" font-size="11" text-anchor="middle" fill="#1b1f23" { "Q" (q.q()) }
            }
            @if let Some(t) = target {
                line x1=(LEFT) x2="252" y1=(y(t)) y2=(y(t)) stroke="#12355b" stroke-width="2" stroke-dasharray="5 3" {}
            }
        }
    }
}
